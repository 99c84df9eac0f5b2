#!lua flags=allow-oom
--[[ obliterate_queue: delete every job and key of the queue, up to ARGV[2] jobs per call;
  call again until it returns 0. Refused while jobs are active unless ARGV[3] is 1.
  KEYS[1] wait       ZSET
  KEYS[2] delayed    ZSET
  KEYS[3] active     ZSET
  KEYS[4] completed  ZSET
  KEYS[5] failed     ZSET
  KEYS[6] events     STREAM
  KEYS[7] marker     ZSET
  KEYS[8] seq        STRING
  KEYS[9] meta       HASH
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] limit
  ARGV[3] force        1: also delete active jobs (their workers' outcomes will be refused)
  Derived: <job_prefix><id> HASH for each job (same hash tag)
  Returns: jobs deleted by this call (0: the queue is gone) | -3 WRONG_STATE (active jobs) ]]
local limit = tonumber(ARGV[2])
if ARGV[3] ~= '1' and redis.call('ZCARD', KEYS[3]) > 0 then return -3 end
local removed = 0
for k = 1, 5 do
  if removed < limit then
    local ids = redis.call('ZRANGE', KEYS[k], 0, limit - removed - 1)
    if #ids > 0 then
      local keys = {}
      for j = 1, #ids do keys[j] = ARGV[1] .. ids[j] end
      redis.call('DEL', unpack(keys))
      redis.call('ZREM', KEYS[k], unpack(ids))
      removed = removed + #ids
    end
  end
end
if removed == 0 then
  redis.call('DEL', KEYS[6], KEYS[7], KEYS[8], KEYS[9])
end
return removed
