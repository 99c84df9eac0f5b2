#!lua
--[[ change_job: waiting | delayed -> the same or the other one, with a new priority and/or a
  new delay. A waiting job keeps its place among the jobs of its new priority (its sequence
  number); a delay of 0 makes a delayed job wait now; a delay > 0 makes it delayed until
  then (from now, by Redis's clock). Running and finished jobs are refused.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] events    STREAM  capped at about ARGV[2] entries
  KEYS[4] marker    ZSET    one member; wakes one idle worker
  KEYS[5] seq       STRING  FIFO sequence counter
  KEYS[6] meta      HASH    parked: jobs parked by group limits
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] op_key       fresh per call: a success is kept there for 60 s, and the same call
                       sent again answers it without acting twice (a refusal writes nothing)
  ARGV[4] id
  ARGV[5] priority     -1000..1000, or '' to keep it
  ARGV[6] delay_ms     >= 0, or '' to keep the job's timing
  ARGV[7] group_prefix key prefix of per-group keys
  Derived: <job_prefix><id> HASH; ARGV[3] STRING; <group_prefix><group>:parked ZSET, where
           a waiting job may be parked, and stays parked (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: {1, state after} | {-1} NO_JOB | {-3, state} WRONG_STATE (active or finished) ]]
--!include jobs
local memo = replayed(ARGV[3])
if memo then return memo end
local priority, delay = tonumber(ARGV[5]), tonumber(ARGV[6])
if (ARGV[5] ~= '' and (not priority or priority < -1000 or priority > 1000
    or priority ~= math.floor(priority))) or (ARGV[6] ~= '' and (not delay or delay < 0)) then
  return bad_input('change_job', 'priority must be an integer from -1000 to 1000 and'
    .. ' delay_ms a number >= 0 (or empty)')
end
local id = ARGV[4]
local key = ARGV[1] .. id
local job = redis.call('HMGET', key, 'state', 'priority', 'group')
local gprefix = ARGV[7] or ''
if not job[1] then return {-1} end
if job[1] ~= 'waiting' and job[1] ~= 'delayed' then return {-3, job[1]} end
local BAND = 1099511627776 -- 2^40
local state = job[1]
priority = priority or tonumber(job[2])
redis.call('HSET', key, 'priority', priority)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if delay and delay > 0 then
  leave_line(KEYS[1], KEYS[6], gprefix, key, id)
  redis.call('ZADD', KEYS[2], now + delay, id)
  redis.call('HSET', key, 'state', 'delayed', 'due', now + delay, 'ready', now + delay)
  state = 'delayed'
elseif (delay and state == 'delayed') or state == 'waiting' then
  local seq
  if state == 'waiting' then
    seq = tonumber(leave_line(KEYS[1], KEYS[6], gprefix, key, id) or 0) % BAND -- its place
  else
    seq = tonumber(redis.call('INCR', KEYS[5]))
    redis.call('ZREM', KEYS[2], id)
    redis.call('HSET', key, 'state', 'waiting', 'due', -1, 'ready', now)
    redis.call('ZADD', KEYS[4], 0, 'w')
  end
  line_up(KEYS[1], KEYS[6], gprefix, job[3] or nil, (1000 - priority) * BAND + seq, id)
  state = 'waiting'
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'e', 'changed', 'id', id)
return remember(ARGV[3], {1, state})
