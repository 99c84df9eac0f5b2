#!lua
--[[ retry_jobs: failed -> waiting, for a batch, with a fresh set of attempts.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] failed    ZSET    job id -> finished at (ms)
  KEYS[3] events    STREAM  capped at about ARGV[2] entries
  KEYS[4] marker    ZSET    one member; wakes one idle worker
  KEYS[5] seq       STRING  FIFO sequence counter
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] op_key       fresh per call (<queue>:op:<random>): the reply is kept there for
                       60 s, and the same call sent again answers it without acting twice
  ARGV[4..] job ids
  Derived: <job_prefix><id> HASH for each job; ARGV[3] STRING (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK | -1 NO_JOB (its id is dropped from failed)
           | -3 WRONG_STATE (not failed) ]]
--!include jobs
local memo = replayed(ARGV[3])
if memo then return memo end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, maxlen = ARGV[1], ARGV[2]
local BAND = 1099511627776 -- 2^40
local out, done = {}, {}
local requeued = false
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = prefix .. id
  local job = redis.call('HMGET', key, 'state', 'priority')
  if not job[1] then
    out[#out + 1] = -1
    if redis.call('ZSCORE', KEYS[2], id) then
      done[#done + 1] = id -- a dangling id (its record was deleted): drop it
    end
  elseif job[1] ~= 'failed' then
    out[#out + 1] = -3
  else
    out[#out + 1] = 1
    done[#done + 1] = id
    requeued = true
    local seq = redis.call('INCR', KEYS[5])
    redis.call('HSET', key, 'state', 'waiting', 'attempts', 0, 'stalls', 0, 'token', '',
      'ready', now)
    redis.call('HDEL', key, 'finished')
    redis.call('ZADD', KEYS[1], (1000 - tonumber(job[2])) * BAND + seq, id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'e', 'added', 'id', id)
  end
end
call_chunked({'ZREM', KEYS[2]}, done)
if requeued then redis.call('ZADD', KEYS[4], 0, 'w') end
if #done == 0 then return out end -- changed nothing: nothing to answer differently later
return remember(ARGV[3], out)
