#!lua flags=allow-oom
--[[ drain_queue: waiting | delayed -> (nothing), up to ARGV[2] jobs per call; call again
  until it returns 0. Active, completed and failed jobs are left alone.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] meta      HASH    parked: jobs parked by group limits
  KEYS[4] parked    ZSET    group -> when to look at its parked jobs again
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] limit
  ARGV[3] group_prefix key prefix of per-group keys
  Derived: <job_prefix><id> HASH for each job; <group_prefix><group>:parked ZSET of each
           parked group (same hash tag)
  Includes: lib/jobs.lua
  Returns: the number of jobs removed by this call ]]
--!include jobs
local limit = tonumber(ARGV[2])
if not limit or limit < 1 then return bad_input('drain_queue', 'limit must be >= 1') end
local removed = purge_sets(ARGV[1], {KEYS[1], KEYS[2]}, limit)
if removed < limit then
  removed = removed + purge_parked(ARGV[1], KEYS[4], KEYS[3], ARGV[3], limit - removed)
end
return removed
