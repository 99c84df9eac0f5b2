#!lua
--[[ add_dead_jobs: (nothing) -> failed, in a dead-letter queue: jobs that failed for good in
  another queue arrive with their whole record (attempts, error, traceback, log, origin); an
  id already here is left alone (the move is re-sent safely).
  KEYS[1] failed    ZSET    job id -> when it arrived (ms); trimmed here by count and age
  KEYS[2] events    STREAM  capped at about ARGV[2] entries
  KEYS[3] metrics_total HASH  counter dead_lettered: +1 per job added
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] keep_count   dead jobs to keep (-1: no count limit; 0: none)
  ARGV[4] keep_age_ms  dead jobs older than this are deleted (-1: no age limit)
  ARGV[5] jobs         MessagePack array of [id, origin queue, flat array of the record's
                       field, value pairs] (at most 200 fields per job)
  Derived: <job_prefix><id> HASH for each job and each trimmed job (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK (added) | 0 DUPLICATE (already here) ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local keep_count, keep_age = tonumber(ARGV[3]), tonumber(ARGV[4])
if not keep_count or not keep_age then
  return bad_input('add_dead_jobs', 'keep_count and keep_age_ms must be numbers')
end
local jobs = cmsgpack.unpack(ARGV[5])
if type(jobs) ~= 'table' then return bad_input('add_dead_jobs', 'jobs must be an array') end
for i, job in ipairs(jobs) do
  local ok = type(job) == 'table' and type(job[1]) == 'string' and #job[1] > 0
    and type(job[2]) == 'string' and type(job[3]) == 'table' and #job[3] % 2 == 0
    and #job[3] <= 400
  if ok then
    for j = 1, #job[3] do ok = ok and type(job[3][j]) == 'string' end
  end
  if not ok then
    return bad_input('add_dead_jobs', 'job ' .. i .. ' is not [id, origin, [field, value...]]')
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, added = {}, 0
for i, job in ipairs(jobs) do
  local id = job[1]
  local key = prefix .. id
  if keep_count == 0 or redis.call('EXISTS', key) == 1 then
    out[i] = 0
  else
    if #job[3] > 0 then redis.call('HSET', key, unpack(job[3])) end
    redis.call('HSET', key, 'state', 'failed', 'token', '', 'origin', job[2],
      'dead_at', now)
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'e', 'dead_lettered', 'id', id,
      'origin', job[2])
    added = added + 1
    out[i] = 1
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[3], 'dead_lettered', added)
  trim_finished(KEYS[1], prefix, now, keep_count, keep_age, added)
end
return out
