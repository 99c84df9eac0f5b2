#!lua flags=allow-oom
--[[ fail_jobs: active -> delayed | waiting (retry with backoff) or -> failed, or ->
  cancelled, for a batch, fenced by each job's lease token. A job is retried while attempts < max_attempts and its
  retry delay is not -1; an outcome marked uncounted (the handler raised
  Retry(count_attempt=False)) gives its attempt back and is retried whatever its attempts.
  A job whose cancel was requested (field cancelled_by, see cancel_job) is cancelled instead,
  whatever its outcome says, as is an outcome marked cancelled (its worker stopped it).
  An outcome of kind 3 (the handler added jobs and waits for them: current_job().wait_for)
  -> blocked until they have finished, its attempt given back (-> waiting at once when
  they all have; -> failed when one did not complete and the policy is f).
  Flows: the jobs waiting for a job that finishes here learn how (settle, lib/jobs.lua).
  KEYS[1] active    ZSET    job id -> lease deadline (ms)
  KEYS[2] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[3] delayed   ZSET    job id -> due time (ms)
  KEYS[4] failed    ZSET    job id -> finished at (ms); trimmed here by count and age
  KEYS[5] events    STREAM  capped at about ARGV[2] entries
  KEYS[6] marker    ZSET    one member; wakes one idle worker
  KEYS[7] seq       STRING  FIFO sequence counter
  KEYS[8] cancelled ZSET    job id -> finished at (ms); trimmed here by count and age
  KEYS[9] metrics_total HASH  counters cancelled (+1 per job cancelled), released
  KEYS[10] blocked  ZSET    jobs waiting for other jobs
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] keep_count   failed (and cancelled) jobs to keep (-1: no count limit; 0: delete
                       at once)
  ARGV[4] keep_age_ms  failed (and cancelled) jobs older than this are deleted (-1: none)
  ARGV[5] outcomes     MessagePack array of [id, token, error, traceback, retry_delay_ms
                       (, kind(, children, policy))]; retry_delay_ms -1: do not retry;
                       kind absent: a failure, 1: a retry that gives its attempt back
                       (needs a delay >= 0), 2: cancelled by its worker on a cancel
                       request, 3: waits for `children` (job ids, at most 10,000), with
                       edge policy f|d|c|i
  Derived: <job_prefix><id> HASH for each job, each trimmed job and each dependent; the
           dependents and early hashes of settle (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK (failed for good) | 2 RETRYING | 3 CANCELLED
           | 4 WAITING (for its children: blocked, or waiting at once) | 0 DUPLICATE
           | -1 NO_JOB | -2 LEASE_LOST ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local fk = flow_keys(prefix, KEYS[2], KEYS[3], KEYS[10], KEYS[4], KEYS[8], KEYS[5], KEYS[6],
  KEYS[7], KEYS[9])
local keep_count, keep_age = tonumber(ARGV[3]), tonumber(ARGV[4])
if not keep_count or not keep_age then
  return bad_input('fail_jobs', 'keep_count and keep_age_ms must be numbers')
end
local rows = cmsgpack.unpack(ARGV[5])
if type(rows) ~= 'table' then return bad_input('fail_jobs', 'outcomes must be an array') end
for i, o in ipairs(rows) do
  if type(o) ~= 'table' or type(o[1]) ~= 'string' or type(o[2]) ~= 'string'
      or type(o[3]) ~= 'string' or type(o[4]) ~= 'string' or type(o[5]) ~= 'number'
      or (o[6] ~= nil and o[6] ~= 1 and o[6] ~= 2 and o[6] ~= 3) or (o[6] == 1 and o[5] < 0)
      or (o[6] == 3 and not (type(o[7]) == 'table' and #o[7] <= 10000
        and (o[8] == 'f' or o[8] == 'd' or o[8] == 'c' or o[8] == 'i'))) then
    return bad_input('fail_jobs', 'outcome ' .. i .. ' is not [id, token, error, traceback,'
      .. ' retry_delay_ms(, kind 1 or 2 | 3, children, policy)]')
  end
  if o[6] == 3 then
    for _, c in ipairs(o[7]) do
      if type(c) ~= 'string' then return bad_input('fail_jobs', 'children must be ids') end
    end
  end
end
local FINISHED = {completed = 'c', failed = 'f', cancelled = 'x'}

-- the job waits for `children` (added by its handler, their edges to it recorded): those
-- finished already were recorded by settle (or are read now); the job is blocked until
-- the others finish. Returns 'failed' with the error, 'cancelled', 'blocked' or 'waiting'.
local function wait_for_children(id, key, children, policy)
  local packed = redis.call('HGET', key, 'deps')
  local deps = packed and cmsgpack.unpack(packed) or {}
  local known = {}
  for _, dep in ipairs(deps) do known[dep] = true end
  for _, c in ipairs(children) do
    if not known[c] then
      known[c] = true
      deps[#deps + 1] = c
    end
  end
  local left, failed_by, dropped = 0, nil, false
  for _, c in ipairs(children) do
    local seen = redis.call('HGET', key, 'dep:' .. c)
    if not seen then
      local d = redis.call('HMGET', prefix .. c, 'state', 'result', 'error')
      local mark = FINISHED[d[1]]
      if mark then
        seen = mark .. ((mark == 'c' and d[2]) or d[3] or '')
        if mark ~= 'c' and policy == 'i' then seen = 'i' .. string.sub(seen, 2) end
        redis.call('HSET', key, 'dep:' .. c, seen)
      elseif d[1] then
        redis.call('HSET', fk.dependents .. c, id, policy)
        redis.call('HSET', prefix .. c, 'waited', 1)
        left = left + 1
      else
        seen = 'x' .. 'removed before its parent waited for it'
        redis.call('HSET', key, 'dep:' .. c, seen)
      end
    end
    if seen then
      local verdict, err = edge_verdict(c, string.sub(seen, 1, 1), string.sub(seen, 2), policy)
      if verdict == 'f' then failed_by = failed_by or err end
      if verdict == 'd' then dropped = true end
    end
  end
  redis.call('HSET', key, 'deps', cmsgpack.pack(deps), 'deps_total', #deps, 'deps_left', left)
  if failed_by then return 'failed', failed_by end
  if dropped then return 'cancelled' end
  if left > 0 then return 'blocked' end
  return 'waiting'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BAND = 1099511627776 -- 2^40
local out, done = {}, {}
local failed, cancelled, retried_any = 0, 0, false
for _, o in ipairs(rows) do
  local id, token = o[1], o[2]
  local key = prefix .. id
  local job = redis.call('HMGET', key, 'state', 'token', 'attempts', 'max_attempts', 'priority',
    'cancelled_by')
  local status
  if not job[1] then
    status = -1
  elseif job[2] ~= token then
    status = -2
  elseif job[1] ~= 'active' then
    status = 0
  else
    done[#done + 1] = id
    local delay, uncounted = o[5], o[6] == 1
    if o[6] == 3 and not job[6] then
      status = 4
      if tonumber(job[3]) > 0 then redis.call('HINCRBY', key, 'attempts', -1) end
      local next_state, err = wait_for_children(id, key, o[7], o[8])
      redis.call('HSET', key, 'token', '')
      if next_state == 'failed' then
        redis.call('HSET', key, 'state', 'failed', 'finished', now, 'error', err,
          'traceback', '')
        redis.call('ZADD', KEYS[4], now, id)
        redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'e', 'failed', 'id', id)
        settle(fk, prefix, id, 'f', err, now, maxlen)
        failed = failed + 1
      elseif next_state == 'cancelled' then
        cancelled = cancelled + 1
        to_cancelled(key, id, KEYS[8], KEYS[5], maxlen, now, keep_count, 'a dependency',
          KEYS[9])
        settle(fk, prefix, id, 'x', 'cancelled: a job it waited for did not complete', now,
          maxlen)
      elseif next_state == 'blocked' then
        redis.call('HSET', key, 'state', 'blocked')
        redis.call('ZADD', fk.blocked, now, id)
        redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'e', 'blocked', 'id', id)
      else
        local seq = redis.call('INCR', KEYS[7])
        redis.call('HSET', key, 'state', 'waiting', 'ready', now)
        redis.call('ZADD', KEYS[2], (1000 - tonumber(job[5])) * BAND + seq, id)
        redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'e', 'released', 'id', id)
        redis.call('HINCRBY', KEYS[9], 'released', 1)
        retried_any = true
      end
    elseif job[6] or o[6] == 2 then
      status = 3
      cancelled = cancelled + 1
      to_cancelled(key, id, KEYS[8], KEYS[5], maxlen, now, keep_count, job[6] or 'its worker',
        KEYS[9])
      settle(fk, prefix, id, 'x', 'cancelled by ' .. (job[6] or 'its worker'), now, maxlen)
    elseif uncounted or (delay >= 0 and tonumber(job[3]) < tonumber(job[4])) then
      status = 2
      retried_any = true
      if uncounted and tonumber(job[3]) > 0 then redis.call('HINCRBY', key, 'attempts', -1) end
      if delay > 0 then
        redis.call('HSET', key, 'state', 'delayed', 'error', o[3],
          'traceback', o[4], 'due', now + delay, 'ready', now + delay)
        redis.call('ZADD', KEYS[3], now + delay, id)
      else
        local seq = redis.call('INCR', KEYS[7])
        redis.call('HSET', key, 'state', 'waiting', 'error', o[3],
          'traceback', o[4], 'ready', now)
        redis.call('ZADD', KEYS[2], (1000 - tonumber(job[5])) * BAND + seq, id)
      end
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'e', 'retrying', 'id', id,
        'delay_ms', delay)
    else
      status = 1
      failed = failed + 1
      if keep_count == 0 then
        redis.call('DEL', key)
      else
        redis.call('HSET', key, 'state', 'failed', 'error', o[3],
          'traceback', o[4], 'finished', now)
        redis.call('ZADD', KEYS[4], now, id)
      end
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'e', 'failed', 'id', id)
      settle(fk, prefix, id, 'f', o[3], now, maxlen)
    end
  end
  out[#out + 1] = status
end
call_chunked({'ZREM', KEYS[1]}, done)
if retried_any then redis.call('ZADD', KEYS[6], 0, 'w') end
if failed > 0 then trim_finished(KEYS[4], prefix, now, keep_count, keep_age, failed) end
if cancelled > 0 then
  trim_finished(KEYS[8], prefix, now, keep_count, keep_age, cancelled)
end
return out
