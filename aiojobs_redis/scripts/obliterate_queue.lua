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
  KEYS[13] parked    ZSET    group -> when to look at its parked jobs again
  KEYS[14] group_limits HASH
  KEYS[15] group_keys ZSET   group -> when its active and rate sets expire
  KEYS[16] blocked   ZSET
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] limit
  ARGV[3] force        1: also delete active jobs (their workers' outcomes will be refused)
  ARGV[4] group_prefix key prefix of per-group keys
  Derived: <job_prefix><id> HASH for each job; <group_prefix><group>:parked, :active and
           :rate ZSETs of the groups listed (same hash tag)
  Includes: lib/jobs.lua
  Returns: jobs deleted by this call (0: the queue is gone) | -3 WRONG_STATE (active jobs) ]]
--!include jobs
local limit = tonumber(ARGV[2])
-- a limit below 1 would delete nothing, report 0 and so drop the queue's keys under its jobs
if not limit or limit < 1 then return bad_input('obliterate_queue', 'limit must be >= 1') end
if ARGV[3] ~= '1' and redis.call('ZCARD', KEYS[3]) > 0 then return -3 end
local removed = purge_sets(ARGV[1], {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
  KEYS[16]}, limit)
if removed < limit then
  removed = removed + purge_parked(ARGV[1], KEYS[13], KEYS[10], ARGV[4], limit - removed)
end
if removed == 0 then
  -- the groups' active and rate sets (those of the groups that started jobs within a day)
  local groups = redis.call('ZRANGE', KEYS[15], 0, -1)
  for i = 1, #groups, 500 do
    local names = {}
    for j = i, math.min(i + 499, #groups) do
      names[#names + 1] = ARGV[4] .. groups[j] .. ':active'
      names[#names + 1] = ARGV[4] .. groups[j] .. ':rate'
    end
    redis.call('DEL', unpack(names))
  end
  redis.call('DEL', KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13],
    KEYS[14], KEYS[15], KEYS[16])
end
return removed
