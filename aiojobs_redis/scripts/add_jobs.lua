#!lua
--[[ add_jobs: (nothing) -> waiting | delayed, for one job or a batch; an existing id is left alone.
  A job with a dedup key whose window is open (<dedup_prefix><key> names a job) is not
  added: the reply names the existing job; with debounce, a waiting or delayed existing job
  takes the new arguments and delay instead and the window starts again.
  Fair groups: a job with a group gets the place max(V, its group's last place + 1) in its
  priority band, V being the place of the last job a worker took (meta.v): the waiting
  jobs of backlogged groups interleave one by one (start-time fair queuing), and a group's
  burst does not make other groups wait behind it. Jobs without a group are one more flow.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] events    STREAM  capped at about ARGV[2] entries
  KEYS[4] marker    ZSET    one member; wakes one idle worker
  KEYS[5] seq       STRING  FIFO sequence counter: the last place of the jobs without a group
  KEYS[6] meta      HASH    field v: the place of the last job a worker took; parked: how
                            many jobs group limits hold in parked sets
  KEYS[7] groups    ZSET    group -> the last place given to one of its jobs
  KEYS[8] metrics_total HASH counter deduplicated: +1 per job its dedup key answered (or
                            debounced)
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] jobs         MessagePack array of [id, task, payload, options, priority, max_attempts,
                       delay_ms, due_at_ms(, extras)] (delay_ms > 0: relative to Redis
                       TIME; due_at_ms > 0: absolute; -1: unset); extras, a map of what is
                       set of: dedup (key), ttl_ms (its window, with dedup), debounce (1),
                       expires_ms (not started this long after the enqueue: expired),
                       group (1-200 bytes: its fair share among groups)
  ARGV[4] dedup_prefix key prefix of dedup windows
  ARGV[5] group_prefix key prefix of per-group keys ('' or absent: no group limits here)
  ARGV[6] memo         key of the producer's memo for this call's place in its round trip
                       ('' or absent: none): a call sent again after its reply was lost
                       finds its own call id there and gets the first reply, even when a
                       job it added has run and been deleted since
  ARGV[7] call_id      this call's id within the producer (with memo)
  Derived: <job_prefix><id> HASH for each job; <dedup_prefix><key> STRING (job id, expires
           with its window) for each dedup key; <group_prefix><group>:parked ZSET: a job of
           a group with parked jobs (group limits, fetch_jobs) lines up there, behind them,
           and meta.parked counts it (same hash tag)
           <memo> STRING: call_id '|' MessagePack of the reply; expires after 60 s
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: one status per job: 1 OK (added) | 0 DUPLICATE (the id exists; nothing changed)
           | the id of the existing job its dedup key names (a string; with debounce that
           job was updated) ]]
--!include jobs
local prefix, maxlen, gprefix = ARGV[1], ARGV[2], ARGV[5] or ''
local memo, call_id = ARGV[6] or '', ARGV[7] or ''
if memo ~= '' then -- this very call, sent again: the first reply, nothing written twice
  local seen = redis.call('GET', memo)
  if seen and string.sub(seen, 1, #call_id + 1) == call_id .. '|' then
    return cmsgpack.unpack(string.sub(seen, #call_id + 2))
  end
end
local jobs = cmsgpack.unpack(ARGV[3])
if type(jobs) ~= 'table' then return bad_input('add_jobs', 'jobs must be an array') end
for i, job in ipairs(jobs) do
  local ok = type(job) == 'table'
  for j = 1, 4 do ok = ok and type(job[j]) == 'string' end
  for j = 5, 8 do ok = ok and type(job[j]) == 'number' end
  local x = ok and job[9]
  if x ~= nil and x ~= false then
    ok = type(x) == 'table' and x[1] == nil
      and (x.dedup == nil or (type(x.dedup) == 'string' and #x.dedup > 0
        and type(x.ttl_ms) == 'number' and x.ttl_ms > 0))
      and (x.debounce == nil or (x.debounce == 1 and x.dedup ~= nil))
      and (x.expires_ms == nil or (type(x.expires_ms) == 'number' and x.expires_ms > 0))
      and (x.group == nil or (type(x.group) == 'string' and #x.group > 0 and #x.group <= 200))
  end
  if not ok then
    return bad_input('add_jobs', 'job ' .. i .. ' is not [id, task, payload, options, priority,'
      .. ' max_attempts, delay_ms, due_at_ms(, extras)]')
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BAND = 1099511627776 -- 2^40
local n = #jobs
local v = tonumber(redis.call('HGET', KEYS[6], 'v') or 0)
-- the jobs without a group: places after their flow's last one, never before V
local seq = tonumber(redis.call('INCRBY', KEYS[5], n)) - n
if seq < v then -- grouped jobs moved the line on: this flow starts at V
  seq = v
  redis.call('SET', KEYS[5], seq + n)
end
local out = {}
local woke = false
local deduplicated = 0
for i, job in ipairs(jobs) do
  local id = job[1]
  local key = prefix .. id
  local x = job[9] or {}
  local window = x.dedup and (ARGV[4] .. x.dedup)
  local holder = window and redis.call('GET', window)
  local held = holder and redis.call('HMGET', prefix .. holder, 'state', 'priority', 'group')
  if held and not held[1] then holder = nil end -- its job is gone: the window is free
  if holder and x.debounce and (held[1] == 'waiting' or held[1] == 'delayed') then
    -- debounce: the pending job takes the new arguments and delay; the window restarts
    local hkey = prefix .. holder
    local priority, delay, due_at = tonumber(held[2]), job[7], job[8]
    local due = -1
    if delay > 0 then due = now + delay elseif due_at > now then due = due_at end
    leave_line(KEYS[1], KEYS[6], gprefix, hkey, holder)
    redis.call('ZREM', KEYS[2], holder)
    if due > 0 then
      redis.call('HSET', hkey, 'payload', job[3], 'state', 'delayed', 'due', due, 'ready', due)
      redis.call('ZADD', KEYS[2], due, holder)
    else
      redis.call('HSET', hkey, 'payload', job[3], 'state', 'waiting', 'due', -1, 'ready', now)
      line_up(KEYS[1], KEYS[6], gprefix, held[3] or nil, (1000 - priority) * BAND + seq + i,
        holder)
      woke = true
    end
    redis.call('SET', window, holder, 'PX', x.ttl_ms)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'e', 'debounced', 'id', holder)
    out[i] = holder
    deduplicated = deduplicated + 1
  elseif holder and not x.debounce then
    out[i] = holder
    deduplicated = deduplicated + 1
  elseif redis.call('EXISTS', key) == 1 then
    out[i] = 0
  else
    if window then redis.call('SET', window, id, 'PX', x.ttl_ms) end
    local priority, delay, due_at = job[5], job[7], job[8]
    local due = -1
    if delay > 0 then due = now + delay elseif due_at > now then due = due_at end
    local state = 'waiting'
    if due > 0 then state = 'delayed' end
    redis.call('HSET', key, 'task', job[2], 'payload', job[3], 'opts', job[4],
      'priority', priority, 'max_attempts', job[6], 'attempts', 0, 'stalls', 0,
      'state', state, 'created', now, 'due', due, 'ready', math.max(due, now))
    if x.expires_ms then redis.call('HSET', key, 'expires', now + x.expires_ms) end
    if x.group then redis.call('HSET', key, 'group', x.group) end
    if due > 0 then
      redis.call('ZADD', KEYS[2], due, id)
    else
      local place = seq + i
      if x.group then
        place = math.max(v, tonumber(redis.call('ZSCORE', KEYS[7], x.group) or -1) + 1)
        redis.call('ZADD', KEYS[7], place, x.group)
      end
      line_up(KEYS[1], KEYS[6], gprefix, x.group, (1000 - priority) * BAND + place, id)
    end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'e', 'added', 'id', id)
    woke = true
    out[i] = 1
  end
end
if woke then redis.call('ZADD', KEYS[4], 0, 'w') end
if deduplicated > 0 then redis.call('HINCRBY', KEYS[8], 'deduplicated', deduplicated) end
if memo ~= '' then redis.call('SET', memo, call_id .. '|' .. cmsgpack.pack(out), 'PX', 60000) end
return out
