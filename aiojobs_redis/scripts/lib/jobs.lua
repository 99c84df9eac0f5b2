-- lib/jobs.lua: helpers shared by several scripts. The loader puts this file in place of
-- a line '--!include jobs' (so the SHA covers it). Helpers take keys as parameters: the
-- including script passes its declared KEYS, and job hashes are built from the job prefix.
--
-- Rule of every script: validate all of its input first, then write. A script that fails
-- after its first write leaves those writes applied (Redis has no rollback), so nothing
-- after that point may fail on input. Lua's unpack() of about 8,000 values fails ("too many
-- results to unpack"): a variadic command is never given an unbounded list, only chunks of
-- at most CHUNK values through call_chunked.

local CHUNK = 1000 -- values per variadic command; even, so that (score, member) pairs stay whole

-- redis.call(head..., values[i..j]) for consecutive chunks of at most CHUNK values; nothing
-- is called for an empty list. head: the command and its fixed arguments, e.g. {'ZREM', key}
local function call_chunked(head, values)
  local n = #values
  for i = 1, n, CHUNK do
    local args = {unpack(head)}
    local base = #args
    for j = i, math.min(i + CHUNK - 1, n) do args[base + j - i + 1] = values[j] end
    redis.call(unpack(args))
  end
end

-- delete the hashes of these job ids
local function delete_jobs(prefix, ids)
  local keys = {}
  for j = 1, #ids do keys[j] = prefix .. ids[j] end
  call_chunked({'DEL'}, keys)
end

-- retention of a finished-jobs ZSET (job id -> finished at ms): first the jobs older than
-- keep_age ms, then the oldest beyond keep_count (-1: no limit). Each pass deletes at most
-- 1000 + added jobs, `added` being how many the calling script just put in the set: the
-- work stays bounded and a call never leaves the set further over its limits than before.
local function trim_finished(set, prefix, now, keep_count, keep_age, added)
  local budget = 1000 + added
  if keep_age >= 0 then
    local old = redis.call('ZRANGEBYSCORE', set, '-inf', now - keep_age, 'LIMIT', 0, budget)
    if #old > 0 then
      delete_jobs(prefix, old)
      redis.call('ZREMRANGEBYRANK', set, 0, #old - 1)
    end
  end
  if keep_count > 0 then
    local excess = math.min(redis.call('ZCARD', set) - keep_count, budget)
    if excess > 0 then
      delete_jobs(prefix, redis.call('ZRANGE', set, 0, excess - 1))
      redis.call('ZREMRANGEBYRANK', set, 0, excess - 1)
    end
  end
end

-- an active job whose cancel was requested (field cancelled_by) -> cancelled, instead of
-- any other way out of active (retry, stall, hand-back): record it, index it, tell.
-- The caller removes the id from the active set and trims the cancelled set; `totals`
-- (the metrics totals hash) counts it.
local function to_cancelled(key, id, cancelled_set, events, maxlen, now, keep_count, by,
                            totals)
  redis.call('HINCRBY', totals, 'cancelled', 1)
  if keep_count == 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'state', 'cancelled', 'token', '', 'finished', now,
      'error', 'Cancelled by ' .. by)
    redis.call('ZADD', cancelled_set, now, id)
  end
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'e', 'cancelled', 'id', id, 'by', by)
end

-- the keys settle() needs, from the calling script's KEYS; the prefixes of the dependents
-- and early hashes come from the job prefix (<queue prefix>job:), in the same hash tag
local function flow_keys(prefix, wait, delayed, blocked, failed, cancelled, events, marker,
                         seq, totals)
  local base = string.sub(prefix, 1, -5)
  return {wait = wait, delayed = delayed, blocked = blocked, failed = failed,
    cancelled = cancelled, events = events, marker = marker, seq = seq, totals = totals,
    dependents = base .. 'dependents:', early = base .. 'early:'}
end

-- the keys of another queue of the same hash tag, from its key prefix (<prefix>wait, ...:
-- the names of QueueKeys), for a flow whose jobs are in several queues
local function queue_flow_keys(base)
  return {wait = base .. 'wait', delayed = base .. 'delayed', blocked = base .. 'blocked',
    failed = base .. 'failed', cancelled = base .. 'cancelled', events = base .. 'events',
    marker = base .. 'marker', seq = base .. 'seq', totals = base .. 'metrics:total',
    dependents = base .. 'dependents:', early = base .. 'early:'}
end

-- flows: the jobs that wait for job `id` (its dependents hash, <fk.dependents><id>:
-- dependent id -> edge policy, followed by the dependent's queue key prefix when it is in
-- another queue of the same hash tag) learn how it ended, each edge once (HSETNX of field
-- 'dep:<id>' in the dependent's hash, so a re-delivered outcome cannot count twice).
-- code: 'c' completed (text: its encoded result), 'f' failed (text: the error), 'x'
-- cancelled, expired or removed (text: why). A blocked dependent with no edge left goes to
-- wait (delayed if its due time is ahead). When the job did not complete, the edge's
-- policy decides: 'f' (the default) fails the dependent, 'd' cancels it, 'c' goes on with
-- the failure recorded, 'i' goes on as if the edge were not there. A dependent that fails
-- or is cancelled here tells its own dependents in turn (a worklist, not recursion). A
-- dependent not added yet (a flow enqueued in chunks) finds the outcome in
-- <fk.early><dependent> when it is added. fk: the keys wait, delayed, blocked, failed,
-- cancelled, events, marker, seq, totals and the prefixes dependents and early.
-- Returns how many dependents were released to run.
local function settle(fk, prefix, id, code, text, now, maxlen)
  if redis.call('EXISTS', fk.dependents .. id) == 0 then return 0 end
  maxlen = maxlen or 10000
  local work = {{id, code, text, fk, prefix}}
  local released = {}
  while #work > 0 do
    local item = table.remove(work)
    local from, how, why, ffk = item[1], item[2], item[3], item[4]
    local dkey = ffk.dependents .. from
    local edges = redis.call('HGETALL', dkey)
    for i = 1, #edges, 2 do
      -- the edge: policy letter, then the dependent's queue prefix when it is another
      -- queue of the same hash tag (a flow across queues, see add_flow)
      local d, policy, other = edges[i], string.sub(edges[i + 1], 1, 1), string.sub(edges[i + 1], 2)
      local dfk, dprefix = item[4], item[5]
      if other ~= '' then dfk, dprefix = queue_flow_keys(other), other .. 'job:' end
      local key = dprefix .. d
      local mark = how
      if how ~= 'c' and policy == 'i' then mark = 'i' end
      local job = redis.call('HMGET', key, 'state', 'priority', 'due')
      if not job[1] then -- not added yet (or removed): kept for add_flow, for a day
        local early = dfk.early .. d
        redis.call('HSETNX', early, from, mark .. why)
        redis.call('PEXPIRE', early, 86400000)
      elseif job[1] == 'active' then
        -- a running job that added this one and will wait for it (fail_jobs, kind 3): the
        -- outcome is recorded now and counted when it starts to wait
        redis.call('HSETNX', key, 'dep:' .. from, mark .. why)
      elseif job[1] == 'blocked' and redis.call('HSETNX', key, 'dep:' .. from, mark .. why) == 1 then
        if how == 'c' or policy == 'c' or policy == 'i' then
          if redis.call('HINCRBY', key, 'deps_left', -1) <= 0 then
            redis.call('ZREM', dfk.blocked, d)
            local due = tonumber(job[3] or -1) or -1
            if due > now then
              redis.call('HSET', key, 'state', 'delayed')
              redis.call('ZADD', dfk.delayed, due, d)
            else
              local seq = tonumber(redis.call('INCR', dfk.seq))
              redis.call('HSET', key, 'state', 'waiting', 'ready', now)
              redis.call('ZADD', dfk.wait, (1000 - tonumber(job[2] or 0)) * 1099511627776 + seq, d)
              redis.call('ZADD', dfk.marker, 0, 'w')
            end
            redis.call('XADD', dfk.events, 'MAXLEN', '~', maxlen, '*', 'e', 'released', 'id', d)
            released[dfk.totals] = (released[dfk.totals] or 0) + 1
          end
        elseif policy == 'd' then
          redis.call('ZREM', dfk.blocked, d)
          to_cancelled(key, d, dfk.cancelled, dfk.events, maxlen, now, -1, 'dependency ' .. from,
            dfk.totals)
          work[#work + 1] = {d, 'x', 'cancelled: its dependency ' .. from .. ' did not complete',
            dfk, dprefix}
        else
          redis.call('ZREM', dfk.blocked, d)
          local err = 'DependencyFailed: job ' .. from .. ' did not complete: '
            .. string.sub(why, 1, 300)
          redis.call('HSET', key, 'state', 'failed', 'finished', now, 'error', err,
            'traceback', '')
          redis.call('ZADD', dfk.failed, now, d)
          redis.call('XADD', dfk.events, 'MAXLEN', '~', maxlen, '*', 'e', 'failed', 'id', d)
          work[#work + 1] = {d, 'f', err, dfk, dprefix}
        end
      end
    end
    redis.call('DEL', dkey)
  end
  local total = 0
  for totals, n in pairs(released) do
    redis.call('HINCRBY', totals, 'released', n)
    total = total + n
  end
  return total
end

-- what a dependency that ended with `mark` (c completed, f failed, x cancelled, i ignored)
-- does to a job that learns it when added or when it starts to wait: nil (nothing: it
-- counts as done), 'd' (the job is cancelled) or 'f' and the job's error
local function edge_verdict(dep, mark, why, policy)
  if mark == 'c' or mark == 'i' then return nil end
  if policy == 'f' then
    return 'f', 'DependencyFailed: job ' .. dep .. ' did not complete: ' .. string.sub(why, 1, 300)
  end
  if policy == 'd' then return 'd' end
  return nil
end


-- delete up to `limit` jobs (hash and set entry) from these ZSETs, in order; returns how many
local function purge_sets(prefix, sets, limit)
  local removed = 0
  for _, set in ipairs(sets) do
    if removed >= limit then break end
    local ids = redis.call('ZRANGE', set, 0, limit - removed - 1)
    if #ids > 0 then
      delete_jobs(prefix, ids)
      call_chunked({'ZREM', set}, ids)
      removed = removed + #ids
    end
  end
  return removed
end

-- put a waiting job in line: in wait, or, while its group has jobs parked by a group limit
-- (<group_prefix><group>:parked exists), behind them in that parked set (meta.parked counts)
local function line_up(wait, meta, group_prefix, group, score, id)
  if group and group_prefix ~= '' then
    local parked = group_prefix .. group .. ':parked'
    if redis.call('EXISTS', parked) == 1 then
      redis.call('ZADD', parked, score, id)
      redis.call('HINCRBY', meta, 'parked', 1)
      return
    end
  end
  redis.call('ZADD', wait, score, id)
end

-- take a job out of line (wait, or its group's parked set); returns its score, or nil
local function leave_line(wait, meta, group_prefix, key, id)
  local score = redis.call('ZSCORE', wait, id)
  if score then
    redis.call('ZREM', wait, id)
    return score
  end
  local group = group_prefix ~= '' and redis.call('HGET', key, 'group')
  if group then
    local parked = group_prefix .. group .. ':parked'
    score = redis.call('ZSCORE', parked, id)
    if score then
      redis.call('ZREM', parked, id)
      redis.call('HINCRBY', meta, 'parked', -1)
      return score
    end
  end
  return nil
end

-- delete up to `limit` parked jobs (group limits): hash, parked-set entry, meta.parked;
-- a group whose parked set is empty leaves the parked list; returns how many
local function purge_parked(prefix, parked_list, meta, group_prefix, limit)
  local removed = 0
  for _, g in ipairs(redis.call('ZRANGE', parked_list, 0, 99)) do
    if removed >= limit then break end
    local set = group_prefix .. g .. ':parked'
    local ids = redis.call('ZRANGE', set, 0, limit - removed - 1)
    if #ids > 0 then
      delete_jobs(prefix, ids)
      call_chunked({'ZREM', set}, ids)
      redis.call('HINCRBY', meta, 'parked', -#ids)
      removed = removed + #ids
    end
    if redis.call('EXISTS', set) == 0 then redis.call('ZREM', parked_list, g) end
  end
  return removed
end

-- a call sent again after its reply was lost (same op_key, '' for none) answers what it
-- answered the first time instead of acting again (an 'already done' would read as an error)
local function replayed(op_key)
  if op_key == '' then return nil end
  local memo = redis.call('GET', op_key)
  if memo then return cmsgpack.unpack(memo) end
  return nil
end

local function remember(op_key, reply)
  if op_key ~= '' then redis.call('SET', op_key, cmsgpack.pack(reply), 'PX', 60000) end
  return reply
end

-- the error reply of a script refusing its input (before it wrote anything)
local function bad_input(script, what)
  return redis.error_reply('ERR ' .. script .. ': ' .. what)
end
