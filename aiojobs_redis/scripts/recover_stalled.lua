#!lua
--[[ recover_stalled: active -> waiting (or -> failed after too many stalls) for jobs whose
  lease deadline has passed: their worker died, hung, or was cut off from Redis.
  The attempt is given back (a stall is not a failure of the job) and the token is cleared,
  so the old worker's late outcome is refused.
  KEYS[1] active    ZSET    job id -> lease deadline (ms)
  KEYS[2] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[3] failed    ZSET    job id -> finished at (ms)
  KEYS[4] events    STREAM  capped at about ARGV[2] entries
  KEYS[5] marker    ZSET    one member; wakes one idle worker
  KEYS[6] seq       STRING  FIFO sequence counter
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] max_stalls   a job that stalls more often than this is failed
  ARGV[4] limit        how many stalled jobs to handle in this call at most
  Derived: <job_prefix><id> HASH for each job (same hash tag)
  Time:    redis.call('TIME')
  Returns: { jobs put back to waiting, jobs failed } ]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, maxlen = ARGV[1], ARGV[2]
local max_stalls = tonumber(ARGV[3])
local BAND = 1099511627776 -- 2^40
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local requeued, failed = 0, 0
for _, id in ipairs(ids) do
  local key = prefix .. id
  local job = redis.call('HMGET', key, 'priority', 'stalls', 'attempts', 'worker')
  if job[1] then
    local stalls = tonumber(job[2]) + 1
    local attempts = math.max(tonumber(job[3]) - 1, 0)
    if stalls > max_stalls then
      failed = failed + 1
      redis.call('HSET', key, 'state', 'failed', 'token', '', 'stalls', stalls, 'finished', now,
        'error', 'Stalled: the job stalled ' .. stalls .. ' times (its worker died, hung or lost'
        .. ' Redis for longer than the lease); last worker ' .. tostring(job[4]),
        'traceback', '')
      redis.call('ZADD', KEYS[3], now, id)
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'failed', 'id', id)
    else
      requeued = requeued + 1
      local seq = redis.call('INCR', KEYS[6])
      redis.call('HSET', key, 'state', 'waiting', 'token', '', 'stalls', stalls,
        'attempts', attempts, 'ready', now)
      redis.call('ZADD', KEYS[2], (1000 - tonumber(job[1])) * BAND + seq, id)
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'stalled', 'id', id)
    end
  end
end
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
if requeued > 0 then redis.call('ZADD', KEYS[5], 0, 'w') end
return {requeued, failed}
