#!lua flags=allow-oom
--[[ remove_job: waiting | delayed | blocked | completed | failed | cancelled -> (nothing). An
  active job is refused: its worker owns it until it finishes or its lease runs out. The
  jobs waiting for an unfinished job removed here learn it did not complete (settle).
  KEYS[1] wait       ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed    ZSET    job id -> due time (ms)
  KEYS[3] completed  ZSET    job id -> finished at (ms)
  KEYS[4] failed     ZSET    job id -> finished at (ms)
  KEYS[5] cancelled  ZSET    job id -> finished at (ms)
  KEYS[6] events     STREAM  capped at about ARGV[2] entries
  KEYS[7] meta       HASH    parked: jobs parked by group limits (one less if this was one)
  KEYS[8] blocked    ZSET    jobs waiting for other jobs
  KEYS[9] marker     ZSET    one member; wakes one idle worker
  KEYS[10] seq       STRING  FIFO sequence counter
  KEYS[11] metrics_total HASH counters cancelled, released
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] op_key       fresh per call: the reply is kept there for 60 s, and the same call
                       sent again answers it without acting twice
  ARGV[4] id
  ARGV[5] group_prefix key prefix of per-group keys
  Derived: <job_prefix><id> HASH; ARGV[3] STRING; <group_prefix><group>:parked ZSET, where
           a waiting job may be parked; the dependents and early hashes of settle, and each
           dependent's HASH (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: 1 OK | -1 NO_JOB | -3 WRONG_STATE (active) ]]
--!include jobs
local memo = replayed(ARGV[3])
if memo then return memo end
local id = ARGV[4]
local key = ARGV[1] .. id
local state = redis.call('HGET', key, 'state')
if not state then return -1 end
if state == 'active' then return -3 end
leave_line(KEYS[1], KEYS[7], ARGV[5] or '', key, id)
for k = 2, 5 do redis.call('ZREM', KEYS[k], id) end
redis.call('ZREM', KEYS[8], id)
redis.call('DEL', key)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[2], '*', 'e', 'removed', 'id', id)
if state ~= 'completed' and state ~= 'failed' and state ~= 'cancelled' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  settle(flow_keys(ARGV[1], KEYS[1], KEYS[2], KEYS[8], KEYS[4], KEYS[5], KEYS[6], KEYS[9],
    KEYS[10], KEYS[11]), ARGV[1], id, 'x', 'removed', now, ARGV[2])
end
return remember(ARGV[3], 1)
