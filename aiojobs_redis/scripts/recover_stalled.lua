#!lua
--[[ recover_stalled: active -> waiting (or -> failed after too many stalls) for jobs whose
  lease deadline has passed: their worker died, hung, or was cut off from Redis.
  The attempt is given back (a stall is not a failure of the job) and the token is cleared,
  so the old worker's late outcome is refused. A recovered job goes to the front of its
  priority band: it has waited already. A job whose cancel was requested (field
  cancelled_by) is cancelled instead (and counted with the failed ones).
  Time during which Redis itself did not serve (a stall: DEBUG SLEEP, a slow fork or fsync,
  a VM pause; an outage or restart) does not count against leases: every call stamps
  meta.seen; a call that finds the last stamp older than ARGV[7] starts a new serving
  period (meta.serving_since) and recovers nothing until Redis has served for ARGV[7]
  without such a gap, so that the live owners' renewals, queued behind the stall, land
  first.
  Flows: the jobs waiting for a job that finishes here learn how (settle, lib/jobs.lua).
  KEYS[1] active    ZSET    job id -> lease deadline (ms)
  KEYS[2] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[3] failed    ZSET    job id -> finished at (ms); trimmed here by count and age
  KEYS[4] events    STREAM  capped at about ARGV[2] entries
  KEYS[5] marker    ZSET    one member; wakes one idle worker
  KEYS[6] meta      HASH    fields seen, serving_since (ms): the serving clock
  KEYS[7] cancelled ZSET    job id -> finished at (ms); trimmed here by count and age
  KEYS[8] metrics_total HASH  counters cancelled (+1 per job cancelled), released
  KEYS[9] delayed   ZSET    dependents released with a due time ahead
  KEYS[10] blocked  ZSET    jobs waiting for other jobs
  KEYS[11] seq      STRING  FIFO sequence counter
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] max_stalls   a job that stalls more often than this is failed
  ARGV[4] limit        how many stalled jobs to handle in this call at most
  ARGV[5] keep_count   failed (and cancelled) jobs to keep (-1 or absent: no count limit; 0: delete at once)
  ARGV[6] keep_age_ms  failed jobs older than this are deleted (-1 or absent: no age limit)
  ARGV[7] gap_ms       a pause between calls longer than this means Redis was not serving
                       (-1 or absent: no serving clock); the caller's lease / 2
  Derived: <job_prefix><id> HASH for each job, each trimmed job and each dependent; the
           dependents and early hashes of settle (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: { jobs put back to waiting, jobs failed, ms until recovery may run: 0 when it
            ran, negative when the clock just started (a new queue: nothing to report) } ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local fk = flow_keys(prefix, KEYS[2], KEYS[9], KEYS[10], KEYS[3], KEYS[7], KEYS[4], KEYS[5],
  KEYS[11], KEYS[8])
local max_stalls, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local keep_count, keep_age = tonumber(ARGV[5] or -1), tonumber(ARGV[6] or -1)
local gap = tonumber(ARGV[7] or -1)
if not max_stalls or not limit or not keep_count or not keep_age or not gap then
  return bad_input('recover_stalled', 'max_stalls, limit, keep_count, keep_age_ms and gap_ms'
    .. ' must be numbers')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if gap >= 0 then
  local clock = redis.call('HMGET', KEYS[6], 'seen', 'serving_since')
  local seen, since = tonumber(clock[1] or 0), tonumber(clock[2] or 0)
  if now - seen > gap then
    since = now
    redis.call('HSET', KEYS[6], 'seen', now, 'serving_since', now)
  else
    redis.call('HSET', KEYS[6], 'seen', now)
  end
  if now - since < gap then
    local wait = gap - (now - since)
    if not clock[1] then wait = -wait end
    return {0, 0, wait}
  end
end
local BAND = 1099511627776 -- 2^40
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local requeued, failed, cancelled = 0, 0, 0
for _, id in ipairs(ids) do
  local key = prefix .. id
  local job = redis.call('HMGET', key, 'priority', 'stalls', 'attempts', 'worker',
    'cancelled_by')
  if job[1] and job[5] then
    cancelled = cancelled + 1
    to_cancelled(key, id, KEYS[7], KEYS[4], maxlen, now, keep_count, job[5], KEYS[8])
    settle(fk, prefix, id, 'x', 'cancelled by ' .. job[5], now, maxlen)
  elseif job[1] then
    local stalls = tonumber(job[2]) + 1
    local attempts = math.max(tonumber(job[3]) - 1, 0)
    if stalls > max_stalls then
      failed = failed + 1
      if keep_count == 0 then
        redis.call('DEL', key)
      else
        redis.call('HSET', key, 'state', 'failed', 'token', '', 'stalls', stalls,
          'finished', now, 'error', 'Stalled: the job stalled ' .. stalls .. ' times (its'
          .. ' worker died, hung or lost Redis for longer than the lease); last worker '
          .. tostring(job[4]), 'traceback', '')
        redis.call('ZADD', KEYS[3], now, id)
      end
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'failed', 'id', id)
      settle(fk, prefix, id, 'f', 'Stalled ' .. stalls .. ' times', now, maxlen)
    else
      requeued = requeued + 1
      redis.call('HSET', key, 'state', 'waiting', 'token', '', 'stalls', stalls,
        'attempts', attempts, 'ready', now)
      -- the front of its band (waiting jobs have sequence numbers >= 1)
      redis.call('ZADD', KEYS[2], (1000 - tonumber(job[1])) * BAND, id)
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'stalled', 'id', id)
    end
  end
end
call_chunked({'ZREM', KEYS[1]}, ids)
if requeued > 0 then redis.call('ZADD', KEYS[5], 0, 'w') end
if failed > 0 then trim_finished(KEYS[3], prefix, now, keep_count, keep_age, failed) end
if cancelled > 0 then
  trim_finished(KEYS[7], prefix, now, keep_count, keep_age, cancelled)
end
return {requeued, failed + cancelled, 0}
