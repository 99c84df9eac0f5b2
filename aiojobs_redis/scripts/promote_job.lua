#!lua
--[[ promote_job: delayed -> waiting now, ahead of its due time.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] events    STREAM  capped at about ARGV[2] entries
  KEYS[4] marker    ZSET    one member; wakes one idle worker
  KEYS[5] seq       STRING  FIFO sequence counter
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] op_key       fresh per call: the reply is kept there for 60 s, and the same call
                       sent again answers it without acting twice
  ARGV[4] id
  Derived: <job_prefix><id> HASH; ARGV[3] STRING (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: 1 OK | -1 NO_JOB | -3 WRONG_STATE (not delayed) ]]
--!include jobs
local memo = replayed(ARGV[3])
if memo then return memo end
local id = ARGV[4]
local key = ARGV[1] .. id
local job = redis.call('HMGET', key, 'state', 'priority')
if not job[1] then return -1 end
if job[1] ~= 'delayed' then return -3 end
local seq = redis.call('INCR', KEYS[5])
local t = redis.call('TIME')
redis.call('HSET', key, 'state', 'waiting',
  'ready', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('ZREM', KEYS[2], id)
redis.call('ZADD', KEYS[1], (1000 - tonumber(job[2])) * 1099511627776 + seq, id)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'e', 'promoted', 'id', id)
redis.call('ZADD', KEYS[4], 0, 'w')
return remember(ARGV[3], 1)
