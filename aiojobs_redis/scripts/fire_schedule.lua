#!lua
--[[ fire_schedule: a due schedule tick -> waiting job(s), and the schedule advanced, in one step.
  KEYS[1] wait       ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] events     STREAM  capped at about ARGV[2] entries
  KEYS[3] marker     ZSET    one member; wakes one idle worker
  KEYS[4] seq        STRING  FIFO sequence counter
  KEYS[5] schedules  ZSET    schedule name -> due time (ms) of its pending tick; +inf when ended
  ARGV[1] job_prefix     key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] sched_prefix   key prefix of schedule hashes
  ARGV[4] name
  ARGV[5] digest         compare-and-set: the definition the caller planned with
  ARGV[6] tick           compare-and-set: the pending tick (ms) the caller planned from
  ARGV[7] handled        the latest due tick dealt with, fired or skipped (ms)
  ARGV[8] next_tick      the new pending tick (ms); -1: the schedule has ended
  ARGV[9] next_due       next_tick plus its jitter (ms)
  ARGV[10] task
  ARGV[11] payload
  ARGV[12] options
  ARGV[13] priority
  ARGV[14] max_attempts
  ARGV[15..] groups of 1: tick (ms; the job id is 'sched:' .. name .. ':' .. tick)
  Derived: <sched_prefix><name> HASH the schedule; <job_prefix><id> HASH per job (same hash tag)
  Time:    redis.call('TIME')
  Returns: 1 FIRED (advanced; jobs added unless their id exists) | 0 MOVED_ON (the tick or the
           definition changed since the caller read them: nothing written) | -1 NO_SCHEDULE |
           -4 NOT_DUE (the pending tick's due time is after Redis TIME) ]]
-- validate first, write last: nothing below may fail once the first job is written
local next_tick, priority = tonumber(ARGV[8]), tonumber(ARGV[13])
if not tonumber(ARGV[7]) or not next_tick or not priority or not tonumber(ARGV[14])
    or (next_tick >= 0 and not tonumber(ARGV[9])) then
  return redis.error_reply('ERR fire_schedule: handled, next_tick, next_due, priority and'
    .. ' max_attempts must be numbers')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, maxlen = ARGV[1], ARGV[2]
local skey = ARGV[3] .. ARGV[4]
local cur = redis.call('HMGET', skey, 'digest', 'tick', 'due', 'runs')
if not cur[1] then return -1 end
if cur[1] ~= ARGV[5] or cur[2] ~= ARGV[6] then return 0 end
if tonumber(cur[3]) < 0 or tonumber(cur[3]) > now then return -4 end

local BAND = 1099511627776 -- 2^40
local n = #ARGV - 14
local last_job = false
if n > 0 then
  local seq = tonumber(redis.call('INCRBY', KEYS[4], n)) - n
  for i = 0, n - 1 do
    local id = 'sched:' .. ARGV[4] .. ':' .. ARGV[15 + i]
    local key = prefix .. id
    if redis.call('EXISTS', key) == 0 then
      -- the same record as add_jobs writes for a job that waits at once
      redis.call('HSET', key, 'task', ARGV[10], 'payload', ARGV[11], 'opts', ARGV[12],
        'priority', priority, 'max_attempts', ARGV[14], 'attempts', 0, 'stalls', 0,
        'state', 'waiting', 'created', now, 'due', -1, 'ready', now)
      redis.call('ZADD', KEYS[1], (1000 - priority) * BAND + seq + i + 1, id)
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'e', 'added', 'id', id)
    end
    last_job = id
  end
  redis.call('ZADD', KEYS[3], 0, 'w')
end

redis.call('HSET', skey, 'tick', ARGV[8], 'due', ARGV[9], 'last_tick', ARGV[7],
  'runs', tonumber(cur[4] or 0) + n, 'fired_at', now)
if last_job then redis.call('HSET', skey, 'last_job', last_job) end
if next_tick < 0 then
  redis.call('ZADD', KEYS[5], '+inf', ARGV[4])
else
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[4])
end
return 1
