#!lua flags=allow-oom
--[[ complete_jobs: active -> completed for a batch, fenced by each job's lease token.
  Flows: the jobs waiting for a job that finishes here learn how (settle, lib/jobs.lua);
  a job others wait for has the field waited (add_flow), the others cost nothing more.
  KEYS[1] active     ZSET    job id -> lease deadline (ms)
  KEYS[2] completed  ZSET    job id -> finished at (ms); trimmed here by count and age
  KEYS[3] events     STREAM  capped at about ARGV[2] entries
  KEYS[4] wait       ZSET    dependents released to run (flows)
  KEYS[5] delayed    ZSET    dependents released with a due time ahead
  KEYS[6] blocked    ZSET    jobs waiting for other jobs
  KEYS[7] failed     ZSET    dependents failed by a dependency (none here: it completed)
  KEYS[8] cancelled  ZSET    dependents cancelled by a dependency (none here)
  KEYS[9] marker     ZSET    one member; wakes one idle worker
  KEYS[10] seq       STRING  FIFO sequence counter
  KEYS[11] metrics_total HASH counter released
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] keep_count   completed jobs to keep (-1: no count limit; 0: delete at once)
  ARGV[4] keep_age_ms  completed jobs older than this are deleted (-1: no age limit)
  ARGV[5] outcomes     MessagePack array of [id, token, result]
  Derived: <job_prefix><id> HASH for each job, each trimmed job and each dependent; the
           dependents and early hashes of settle (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK | 0 DUPLICATE (this token already completed it)
           | -1 NO_JOB | -2 LEASE_LOST ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local fk = flow_keys(prefix, KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[3], KEYS[9],
  KEYS[10], KEYS[11])
local keep_count, keep_age = tonumber(ARGV[3]), tonumber(ARGV[4])
if not keep_count or not keep_age then
  return bad_input('complete_jobs', 'keep_count and keep_age_ms must be numbers')
end
local rows = cmsgpack.unpack(ARGV[5])
if type(rows) ~= 'table' then return bad_input('complete_jobs', 'outcomes must be an array') end
for i, o in ipairs(rows) do
  if type(o) ~= 'table' or type(o[1]) ~= 'string' or type(o[2]) ~= 'string'
      or type(o[3]) ~= 'string' then
    return bad_input('complete_jobs', 'outcome ' .. i .. ' is not [id, token, result]')
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, done = {}, {}
for _, o in ipairs(rows) do
  local id, token = o[1], o[2]
  local key = prefix .. id
  local job = redis.call('HMGET', key, 'state', 'token', 'waited')
  local status
  if not job[1] then
    status = -1
  elseif job[2] ~= token then
    status = -2
  elseif job[1] ~= 'active' then
    status = 0
  else
    status = 1
    done[#done + 1] = id
    if keep_count == 0 then
      redis.call('DEL', key)
    else
      redis.call('HSET', key, 'state', 'completed', 'result', o[3], 'finished', now)
      redis.call('ZADD', KEYS[2], now, id)
    end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'e', 'completed', 'id', id)
    if job[3] then settle(fk, prefix, id, 'c', o[3], now, maxlen) end -- a flow waits
  end
  out[#out + 1] = status
end
if #done > 0 then
  call_chunked({'ZREM', KEYS[1]}, done)
  trim_finished(KEYS[2], prefix, now, keep_count, keep_age, #done)
end
return out
