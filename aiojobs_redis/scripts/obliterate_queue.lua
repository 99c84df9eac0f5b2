#!lua flags=allow-oom
--[[ obliterate_queue: delete every job and key of the queue, up to ARGV[2] jobs per call;
  call again until it returns 0. Refused while jobs are active unless ARGV[3] is 1.
  KEYS[1] wait       ZSET
  KEYS[2] delayed    ZSET
  KEYS[3] active     ZSET
  KEYS[4] completed  ZSET
  KEYS[5] failed     ZSET
  KEYS[6] cancelled  ZSET
  KEYS[7] events     STREAM
  KEYS[8] marker     ZSET
  KEYS[9] seq        STRING
  KEYS[10] meta      HASH
  KEYS[11] rate      ZSET
  KEYS[12] groups    ZSET
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] limit
  ARGV[3] force        1: also delete active jobs (their workers' outcomes will be refused)
  Derived: <job_prefix><id> HASH for each job (same hash tag)
  Includes: lib/jobs.lua
  Returns: jobs deleted by this call (0: the queue is gone) | -3 WRONG_STATE (active jobs) ]]
--!include jobs
local limit = tonumber(ARGV[2])
-- a limit below 1 would delete nothing, report 0 and so drop the queue's keys under its jobs
if not limit or limit < 1 then return bad_input('obliterate_queue', 'limit must be >= 1') end
if ARGV[3] ~= '1' and redis.call('ZCARD', KEYS[3]) > 0 then return -3 end
local removed = purge_sets(ARGV[1], {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]},
  limit)
if removed == 0 then
  redis.call('DEL', KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12])
end
return removed
