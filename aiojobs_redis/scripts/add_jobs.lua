#!lua
--[[ add_jobs: (nothing) -> waiting | delayed, for one job or a batch; an existing id is left alone.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] events    STREAM  capped at about ARGV[2] entries
  KEYS[4] marker    ZSET    one member; wakes one idle worker
  KEYS[5] seq       STRING  FIFO sequence counter
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] jobs         MessagePack array of [id, task, payload, options, priority, max_attempts,
                       delay_ms, due_at_ms] (delay_ms > 0: relative to Redis TIME;
                       due_at_ms > 0: absolute; -1: unset)
  Derived: <job_prefix><id> HASH for each job (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK (added) | 0 DUPLICATE (the id exists; nothing changed) ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local jobs = cmsgpack.unpack(ARGV[3])
if type(jobs) ~= 'table' then return bad_input('add_jobs', 'jobs must be an array') end
for i, job in ipairs(jobs) do
  local ok = type(job) == 'table'
  for j = 1, 4 do ok = ok and type(job[j]) == 'string' end
  for j = 5, 8 do ok = ok and type(job[j]) == 'number' end
  if not ok then
    return bad_input('add_jobs', 'job ' .. i .. ' is not [id, task, payload, options, priority,'
      .. ' max_attempts, delay_ms, due_at_ms]')
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BAND = 1099511627776 -- 2^40
local n = #jobs
local seq = tonumber(redis.call('INCRBY', KEYS[5], n)) - n
local out = {}
local woke = false
for i, job in ipairs(jobs) do
  local id = job[1]
  local key = prefix .. id
  if redis.call('EXISTS', key) == 1 then
    out[i] = 0
  else
    local priority, delay, due_at = job[5], job[7], job[8]
    local due = -1
    if delay > 0 then due = now + delay elseif due_at > now then due = due_at end
    local state = 'waiting'
    if due > 0 then state = 'delayed' end
    redis.call('HSET', key, 'task', job[2], 'payload', job[3], 'opts', job[4],
      'priority', priority, 'max_attempts', job[6], 'attempts', 0, 'stalls', 0,
      'state', state, 'created', now, 'due', due, 'ready', math.max(due, now))
    if due > 0 then
      redis.call('ZADD', KEYS[2], due, id)
    else
      redis.call('ZADD', KEYS[1], (1000 - priority) * BAND + seq + i, id)
    end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'e', 'added', 'id', id)
    woke = true
    out[i] = 1
  end
end
if woke then redis.call('ZADD', KEYS[4], 0, 'w') end
return out
