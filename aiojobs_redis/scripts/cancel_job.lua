#!lua flags=allow-oom
--[[ cancel_job: waiting | delayed | blocked -> cancelled (the job never runs); active -> active with a
  cancel request (field cancelled_by), published on the queue's cancel channel so that the
  worker running it cancels its handler at once and records it cancelled (fail_jobs); the
  request also holds when that worker is gone: the job is then cancelled, not retried,
  when it leaves active (fail_jobs, recover_stalled, return_jobs). A finished job is refused.
  A flow: cancelling a blocked job also cancels the jobs it waits for that have not started
  and that no other blocked job waits for (and theirs, in turn).
  Flows: the jobs waiting for a job that finishes here learn how (settle, lib/jobs.lua).
  KEYS[1] wait       ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed    ZSET    job id -> due time (ms)
  KEYS[3] cancelled  ZSET    job id -> finished at (ms); trimmed here by count and age
  KEYS[4] events     STREAM  capped at about ARGV[2] entries
  KEYS[5] meta       HASH    parked: jobs parked by group limits (one less if this was one)
  KEYS[6] metrics_total HASH  counter cancelled: +1 per job cancelled
  KEYS[7] blocked    ZSET    jobs waiting for other jobs
  KEYS[8] failed     ZSET    dependents failed by a dependency
  KEYS[9] marker     ZSET    one member; wakes one idle worker
  KEYS[10] seq       STRING  FIFO sequence counter
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] op_key       fresh per call: a success is kept there for 60 s, and the same call
                       sent again answers it without acting twice (a refusal writes nothing)
  ARGV[4] id
  ARGV[5] by           who cancels (1-200 bytes)
  ARGV[6] keep_count   cancelled jobs to keep (-1: no count limit; 0: delete at once)
  ARGV[7] keep_age_ms  cancelled jobs older than this are deleted (-1: no age limit)
  ARGV[8] channel      the queue's cancel channel: PUBLISH <id> there for an active job
  ARGV[9] group_prefix key prefix of per-group keys
  Derived: <job_prefix><id> HASH and each trimmed job's; ARGV[3] STRING;
           <group_prefix><group>:parked ZSET, where a waiting job may be parked; the
           dependents and early hashes of settle, and each dependent's HASH (same tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: {1} CANCELLED | {2} REQUESTED (active: its worker cancels it) | {-1} NO_JOB
           | {-3, state} FINISHED (completed, failed or cancelled) ]]
--!include jobs
local memo = replayed(ARGV[3])
if memo then return memo end
local prefix, maxlen, id, by = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local keep_count, keep_age = tonumber(ARGV[6]), tonumber(ARGV[7])
if not keep_count or not keep_age then
  return bad_input('cancel_job', 'keep_count and keep_age_ms must be numbers')
end
if #by == 0 or #by > 200 then return bad_input('cancel_job', 'by must be 1-200 bytes') end
local key = prefix .. id
local state = redis.call('HGET', key, 'state')
if not state then return {-1} end
if state == 'active' then
  redis.call('HSET', key, 'cancelled_by', by)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'cancelling', 'id', id,
    'by', by)
  redis.call('PUBLISH', ARGV[8], id)
  return remember(ARGV[3], {2})
end
if state ~= 'waiting' and state ~= 'delayed' and state ~= 'blocked' then
  return {-3, state}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fk = flow_keys(prefix, KEYS[1], KEYS[2], KEYS[7], KEYS[8], KEYS[3], KEYS[4], KEYS[9],
  KEYS[10], KEYS[6])
local gprefix = ARGV[9] or ''

-- a flow: the jobs a cancelled blocked job waited for, not started yet and waited for by
-- no other job still blocked, are cancelled with it (and theirs in turn)
local function unneeded(dep, for_whom)
  local st = redis.call('HGET', prefix .. dep, 'state')
  if st ~= 'waiting' and st ~= 'delayed' and st ~= 'blocked' then return nil end
  local others = redis.call('HKEYS', fk.dependents .. dep)
  for _, other in ipairs(others) do
    if other ~= for_whom and redis.call('HGET', prefix .. other, 'state') == 'blocked' then
      return nil
    end
  end
  return st
end

local work = {{id, state, by}}
local cancelled = 0
while #work > 0 do
  local item = table.remove(work)
  local jid, jstate, jby = item[1], item[2], item[3]
  local jkey = prefix .. jid
  local deps = jstate == 'blocked' and redis.call('HGET', jkey, 'deps')
  leave_line(KEYS[1], KEYS[5], gprefix, jkey, jid)
  redis.call('ZREM', KEYS[2], jid)
  redis.call('ZREM', KEYS[7], jid)
  redis.call('HSET', jkey, 'cancelled_by', jby)
  to_cancelled(jkey, jid, KEYS[3], KEYS[4], maxlen, now, keep_count, jby, KEYS[6])
  settle(fk, prefix, jid, 'x', 'cancelled by ' .. jby, now, maxlen)
  cancelled = cancelled + 1
  if deps then
    for _, dep in ipairs(cmsgpack.unpack(deps)) do
      local st = unneeded(dep, jid)
      if st then work[#work + 1] = {dep, st, 'cancel of ' .. id} end
    end
  end
end
trim_finished(KEYS[3], prefix, now, keep_count, keep_age, cancelled)
return remember(ARGV[3], {1})
