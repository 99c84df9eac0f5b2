#!lua flags=allow-oom
--[[ drain_queue: waiting | delayed | blocked -> (nothing), up to ARGV[2] jobs per call; call
  again until it returns 0. Active, completed and failed jobs are left alone. The jobs
  waiting for a job drained here learn it did not complete (settle).
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] meta      HASH    parked: jobs parked by group limits
  KEYS[4] parked    ZSET    group -> when to look at its parked jobs again
  KEYS[5] blocked   ZSET    jobs waiting for other jobs
  KEYS[6] failed    ZSET    dependents failed by a drained dependency
  KEYS[7] cancelled ZSET    dependents cancelled by a drained dependency
  KEYS[8] events    STREAM  capped at about ARGV[4] entries
  KEYS[9] marker    ZSET    one member; wakes one idle worker
  KEYS[10] seq      STRING  FIFO sequence counter
  KEYS[11] metrics_total HASH counters cancelled, released
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] limit
  ARGV[3] group_prefix key prefix of per-group keys
  ARGV[4] events_maxlen
  Derived: <job_prefix><id> HASH for each job; <group_prefix><group>:parked ZSET of each
           parked group; the dependents and early hashes of settle, and each dependent's
           HASH (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: the number of jobs removed by this call ]]
--!include jobs
local limit = tonumber(ARGV[2])
if not limit or limit < 1 then return bad_input('drain_queue', 'limit must be >= 1') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fk = flow_keys(ARGV[1], KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9],
  KEYS[10], KEYS[11])
-- blocked jobs first: a drained dependency then finds its dependents gone already
local removed = 0
for _, set in ipairs({KEYS[5], KEYS[1], KEYS[2]}) do
  if removed >= limit then break end
  local ids = redis.call('ZRANGE', set, 0, limit - removed - 1)
  if #ids > 0 then
    delete_jobs(ARGV[1], ids)
    call_chunked({'ZREM', set}, ids)
    for _, id in ipairs(ids) do settle(fk, ARGV[1], id, 'x', 'drained', now, ARGV[4]) end
    removed = removed + #ids
  end
end
if removed < limit then
  removed = removed + purge_parked(ARGV[1], KEYS[4], KEYS[3], ARGV[3], limit - removed)
end
return removed
