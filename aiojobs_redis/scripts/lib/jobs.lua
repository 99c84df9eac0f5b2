-- lib/jobs.lua: helpers shared by several scripts. The loader puts this file in place of
-- a line '--!include jobs' (so the SHA covers it). Helpers take keys as parameters: the
-- including script passes its declared KEYS, and job hashes are built from the job prefix.

-- delete the hashes of these job ids
local function delete_jobs(prefix, ids)
  if #ids == 0 then return end
  local keys = {}
  for j = 1, #ids do keys[j] = prefix .. ids[j] end
  redis.call('DEL', unpack(keys))
end

-- retention of a finished-jobs ZSET (job id -> finished at ms): first the jobs older than
-- keep_age ms, then the oldest beyond keep_count (-1: no limit); at most 1000 each pass
local function trim_finished(set, prefix, now, keep_count, keep_age)
  if keep_age >= 0 then
    local old = redis.call('ZRANGEBYSCORE', set, '-inf', now - keep_age, 'LIMIT', 0, 1000)
    if #old > 0 then
      delete_jobs(prefix, old)
      redis.call('ZREMRANGEBYRANK', set, 0, #old - 1)
    end
  end
  if keep_count > 0 then
    local excess = math.min(redis.call('ZCARD', set) - keep_count, 1000)
    if excess > 0 then
      delete_jobs(prefix, redis.call('ZRANGE', set, 0, excess - 1))
      redis.call('ZREMRANGEBYRANK', set, 0, excess - 1)
    end
  end
end

-- delete up to `limit` jobs (hash and set entry) from these ZSETs, in order; returns how many
local function purge_sets(prefix, sets, limit)
  local removed = 0
  for _, set in ipairs(sets) do
    if removed >= limit then break end
    local ids = redis.call('ZRANGE', set, 0, limit - removed - 1)
    if #ids > 0 then
      delete_jobs(prefix, ids)
      redis.call('ZREM', set, unpack(ids))
      removed = removed + #ids
    end
  end
  return removed
end
