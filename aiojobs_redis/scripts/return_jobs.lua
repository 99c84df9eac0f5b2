#!lua
--[[ return_jobs: active -> waiting at the front of its priority, for a batch, fenced by token.
  Used by a worker that shuts down before its jobs finished: they run again at once elsewhere
  instead of after a lease timeout. The attempt is given back. A job whose cancel was
  requested (field cancelled_by) is cancelled instead.
  Flows: the jobs waiting for a job that finishes here learn how (settle, lib/jobs.lua).
  KEYS[1] active    ZSET    job id -> lease deadline (ms)
  KEYS[2] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[3] events    STREAM  capped at about ARGV[2] entries
  KEYS[4] marker    ZSET    one member; wakes one idle worker
  KEYS[5] cancelled ZSET    job id -> finished at (ms); trimmed by the next fail_jobs or
                            cancel_job (a shutdown hands back at most its concurrency)
  KEYS[6] metrics_total HASH  counters cancelled (+1 per job cancelled), released
  KEYS[7] delayed   ZSET    dependents released with a due time ahead
  KEYS[8] blocked   ZSET    jobs waiting for other jobs
  KEYS[9] failed    ZSET    dependents failed by a dependency
  KEYS[10] seq      STRING  FIFO sequence counter
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3..] groups of 2: id, token
  Derived: <job_prefix><id> HASH for each job and each dependent; the dependents and early
           hashes of settle (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK | 3 CANCELLED | -1 NO_JOB | -2 LEASE_LOST ]]
--!include jobs
if (#ARGV - 2) % 2 ~= 0 then return bad_input('return_jobs', 'an id without its token') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, maxlen = ARGV[1], ARGV[2]
local fk = flow_keys(prefix, KEYS[2], KEYS[7], KEYS[8], KEYS[9], KEYS[5], KEYS[3], KEYS[4],
  KEYS[10], KEYS[6])
local BAND = 1099511627776 -- 2^40
local out, done, returned = {}, {}, false
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local key = prefix .. id
  local job = redis.call('HMGET', key, 'state', 'token', 'priority', 'attempts',
    'cancelled_by')
  if not job[1] then
    out[#out + 1] = -1
  elseif job[1] ~= 'active' or job[2] ~= ARGV[i + 1] then
    out[#out + 1] = -2
  elseif job[5] then
    out[#out + 1] = 3
    done[#done + 1] = id
    to_cancelled(key, id, KEYS[5], KEYS[3], maxlen, now, -1, job[5], KEYS[6])
    settle(fk, prefix, id, 'x', 'cancelled by ' .. job[5], now, maxlen)
  else
    out[#out + 1] = 1
    done[#done + 1] = id
    returned = true
    redis.call('HSET', key, 'state', 'waiting', 'token', '', 'ready', now,
      'attempts', math.max(tonumber(job[4]) - 1, 0))
    redis.call('ZADD', KEYS[2], (1000 - tonumber(job[3])) * BAND, id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'e', 'returned', 'id', id)
  end
end
call_chunked({'ZREM', KEYS[1]}, done)
if returned then redis.call('ZADD', KEYS[4], 0, 'w') end
return out
