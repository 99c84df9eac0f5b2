#!lua flags=allow-oom
--[[ drain_queue: waiting | delayed -> (nothing), up to ARGV[2] jobs per call; call again
  until it returns 0. Active, completed and failed jobs are left alone.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] limit
  Derived: <job_prefix><id> HASH for each job (same hash tag)
  Returns: the number of jobs removed by this call ]]
local removed = 0
local limit = tonumber(ARGV[2])
for k = 1, 2 do
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
return removed
