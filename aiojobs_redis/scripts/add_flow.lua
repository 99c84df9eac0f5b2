#!lua
--[[ add_flow: (nothing) -> waiting | delayed | blocked, for the jobs of a flow (a chunk of it,
  in the order of the flow: a job comes after the jobs it waits for). A job that waits for
  jobs still unfinished is blocked until the last of them has finished (settle, in every
  script that finishes a job); one whose dependency already finished learns how at once,
  from the dependency's record or from <early_prefix><its id> (a dependency of an earlier
  chunk that finished before this job was added). An existing id is left alone (a flow
  enqueued again), but its edges to the jobs that wait for it are recorded.
  Edge policies, when the dependency does not complete: f fail this job (the default),
  d cancel it, c go on with the failure recorded, i go on as if the edge were not there.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] blocked   ZSET    job id -> created (ms): jobs waiting for other jobs
  KEYS[4] failed    ZSET    job id -> finished at (ms)
  KEYS[5] cancelled ZSET    job id -> finished at (ms)
  KEYS[6] events    STREAM  capped at about ARGV[2] entries
  KEYS[7] marker    ZSET    one member; wakes one idle worker
  KEYS[8] seq       STRING  FIFO sequence counter
  KEYS[9] metrics_total HASH counters cancelled, released
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] jobs         MessagePack array of [id, task, payload, options, priority, max_attempts,
                       delay_ms, due_at_ms, deps, dependents]: deps, the jobs this one waits
                       for, and dependents, the jobs of the flow that wait for this one, are
                       arrays of [job id, policy(, queue key prefix)] (at most 10,000
                       each); the prefix (ajr:{<tag>}/<name>: or ajr:{<tag>}:) names
                       another queue of the same hash tag, where that job is
  Derived: <job_prefix><id> HASH for each job and each dependency (fields dep:<id>: how it
           ended, deps, deps_total, deps_left; waited: others wait for it); with Q the
           job prefix without its 'job:', or the prefix an edge names, Q job:<id> HASH
           of a dependency in another queue, Q dependents:<id> HASH (dependent id ->
           policy, then the dependent's queue prefix when it is another) of each
           unfinished job waited for; Q early:<id> HASH, read and deleted (the same hash
           tag: queues <tag>:<name> share it)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK (added) | 0 DUPLICATE (the id exists; its edges are
           recorded, nothing else changed) ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local fk = flow_keys(prefix, KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7],
  KEYS[8], KEYS[9])
local eprefix = fk.early
local jobs = cmsgpack.unpack(ARGV[3])
local POLICIES = {f = true, d = true, c = true, i = true}
local MAX_EDGES = 10000

local function edges_ok(list)
  if type(list) ~= 'table' or #list > MAX_EDGES then return false end
  for _, e in ipairs(list) do
    if type(e) ~= 'table' or type(e[1]) ~= 'string' or #e[1] == 0 or not POLICIES[e[2]]
        or (e[3] ~= nil and (type(e[3]) ~= 'string' or string.sub(e[3], -1) ~= ':')) then
      return false
    end
  end
  return true
end

if type(jobs) ~= 'table' then return bad_input('add_flow', 'jobs must be an array') end
local in_call = {}
for i, job in ipairs(jobs) do
  local ok = type(job) == 'table'
  for j = 1, 4 do ok = ok and type(job[j]) == 'string' end
  for j = 5, 8 do ok = ok and type(job[j]) == 'number' end
  ok = ok and edges_ok(job[9]) and edges_ok(job[10])
  if not ok then
    return bad_input('add_flow', 'job ' .. i .. ' is not [id, task, payload, options, priority,'
      .. ' max_attempts, delay_ms, due_at_ms, deps, dependents] with edges [id, f|d|c|i'
      .. '(, queue prefix)]')
  end
  -- every dependency exists: in this call before it, in Redis, or as an early outcome
  if redis.call('EXISTS', prefix .. job[1]) == 0 then
    for _, e in ipairs(job[9]) do
      if not (e[3] == nil and in_call[e[1]])
          and redis.call('EXISTS', (e[3] and e[3] .. 'job:' or prefix) .. e[1]) == 0
          and redis.call('HEXISTS', eprefix .. job[1], e[1]) == 0 then
        return bad_input('add_flow', 'job ' .. job[1] .. ' waits for job ' .. e[1]
          .. ', which does not exist (never added, or removed by retention)')
      end
    end
  end
  in_call[job[1]] = true
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BAND = 1099511627776 -- 2^40
local FINISHED = {completed = 'c', failed = 'f', cancelled = 'x'}

local base = string.sub(prefix, 1, -5) -- this queue's key prefix

-- record that `dependent` waits for `id` (id unfinished); id_base, dependent_base: the key
-- prefixes of their queues, nil for this one
local function wait_edge(id, id_base, dependent, dependent_base, policy)
  local edge = policy
  if (dependent_base or base) ~= (id_base or base) then edge = policy .. (dependent_base or base) end
  redis.call('HSET', (id_base or base) .. 'dependents:' .. id, dependent, edge)
  redis.call('HSET', (id_base or base) .. 'job:' .. id, 'waited', 1) -- complete_jobs settles
end

local out = {}
local woke = false
for i, job in ipairs(jobs) do
  local id = job[1]
  local key = prefix .. id
  local state = redis.call('HGET', key, 'state')
  if state then
    out[i] = 0
    if not FINISHED[state] then
      for _, e in ipairs(job[10]) do wait_edge(id, nil, e[1], e[3], e[2]) end
    end
  else
    local priority, delay, due_at = job[5], job[7], job[8]
    local due = -1
    if delay > 0 then due = now + delay elseif due_at > now then due = due_at end
    redis.call('HSET', key, 'task', job[2], 'payload', job[3], 'opts', job[4],
      'priority', priority, 'max_attempts', job[6], 'attempts', 0, 'stalls', 0,
      'state', 'blocked', 'created', now, 'due', due, 'ready', math.max(due, now))
    for _, e in ipairs(job[10]) do wait_edge(id, nil, e[1], e[3], e[2]) end
    -- what each dependency did, if it finished; the others are waited for
    local left, failed_by, dropped_by = 0, nil, nil
    local order = {}
    local early = eprefix .. id
    for k, e in ipairs(job[9]) do
      local dep, policy = e[1], e[2]
      order[k] = dep
      local mark, why
      local seen = redis.call('HGET', early, dep)
      if seen then
        mark, why = string.sub(seen, 1, 1), string.sub(seen, 2)
      else
        local d = redis.call('HMGET', (e[3] and e[3] .. 'job:' or prefix) .. dep, 'state',
          'result', 'error')
        mark = FINISHED[d[1]]
        if mark == 'c' then why = d[2] or '' elseif mark then why = d[3] or d[1] end
      end
      if not mark then
        wait_edge(dep, e[3], id, nil, policy)
        left = left + 1
      else
        if mark ~= 'c' and mark ~= 'i' and policy == 'i' then mark = 'i' end
        if redis.call('HSETNX', key, 'dep:' .. dep, mark .. why) == 1 then
          local verdict, err = edge_verdict(dep, mark, why, policy)
          if verdict == 'f' then failed_by = failed_by or err end
          if verdict == 'd' then dropped_by = dep end
        end
      end
    end
    redis.call('DEL', early)
    if #order > 0 then
      redis.call('HSET', key, 'deps', cmsgpack.pack(order), 'deps_total', #order,
        'deps_left', left)
    end
    if failed_by then
      redis.call('HSET', key, 'state', 'failed', 'finished', now, 'error', failed_by,
        'traceback', '')
      redis.call('ZADD', KEYS[4], now, id)
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'e', 'failed', 'id', id)
      settle(fk, prefix, id, 'f', failed_by, now, maxlen)
    elseif dropped_by then
      to_cancelled(key, id, KEYS[5], KEYS[6], maxlen, now, -1, 'dependency ' .. dropped_by,
        KEYS[9])
      settle(fk, prefix, id, 'x', 'cancelled: its dependency ' .. dropped_by
        .. ' did not complete', now, maxlen)
    elseif left > 0 then
      redis.call('ZADD', KEYS[3], now, id)
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'e', 'blocked', 'id', id)
    elseif due > 0 then
      redis.call('HSET', key, 'state', 'delayed')
      redis.call('ZADD', KEYS[2], due, id)
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'e', 'added', 'id', id)
    else
      local seq = tonumber(redis.call('INCR', KEYS[8]))
      redis.call('HSET', key, 'state', 'waiting')
      redis.call('ZADD', KEYS[1], (1000 - priority) * BAND + seq, id)
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'e', 'added', 'id', id)
      woke = true
    end
    out[i] = 1
  end
end
if woke then redis.call('ZADD', KEYS[7], 0, 'w') end
return out
