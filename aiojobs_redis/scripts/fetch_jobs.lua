#!lua
--[[ fetch_jobs: delayed -> waiting when due, then waiting -> active for up to ARGV[3] jobs.
  A job taken after its 'expires' time (JobOptions.expires_s) -> failed as expired instead.
  The queue's limits (meta: rate_max starts per rate_ms, max_active jobs active at once,
  across all workers) bound how many are taken; a limited call says when to ask again.
  Group limits (meta g_max_active, g_rate_max, g_rate_ms for every group; group-limits for
  one group): a job taken of a group with no room is parked instead (moved to its group's
  parked set, the group listed in `parked` with the time to look again); parked jobs go
  back to wait, in their places, as their group gets room. Jobs that are not waiting any
  more (cancelled or removed while parked) are dropped from line here.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] active    ZSET    job id -> lease deadline (ms)
  KEYS[4] events    STREAM  capped at about ARGV[2] entries
  KEYS[5] marker    ZSET    one member; wakes one idle worker
  KEYS[6] seq       STRING  FIFO sequence counter
  KEYS[7] meta      HASH    paused, rate_max, rate_ms, max_active; v: the place (in its
                            band) of the last job taken, for fair groups (add_jobs)
  KEYS[8] failed    ZSET    job id -> finished at (ms); trimmed here by count and age
  KEYS[9] rate      ZSET    the starts of the last rate_ms (token -> ms); at most rate_max
  KEYS[10] groups   ZSET    group -> last place given (add_jobs); places below V dropped here
  KEYS[11] parked   ZSET    group -> ms when to look at its parked jobs again
  KEYS[12] group_limits HASH group -> 'max_active:rate_max:rate_ms' (empty: none) overriding
                            the meta defaults for that group
  KEYS[13] group_keys ZSET  group -> when its active and rate sets expire (obliterate reads it)
  KEYS[14] metrics_total HASH counters limited (+1 per call that a queue limit cut short
                            while jobs waited) and parked (+1 per job a group limit parked)
  KEYS[15] blocked  ZSET    jobs waiting for other jobs: an expired job's dependents learn
  KEYS[16] cancelled ZSET   dependents cancelled by an expired dependency
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] count        how many jobs to take at most (0: only promote and report)
  ARGV[4] lease_ms
  ARGV[5] worker_id
  ARGV[6] token_nonce  fresh per call; token of the i-th job is nonce .. ':' .. i
  ARGV[7] promote_limit  how many due delayed jobs to promote at most
  ARGV[8] memo_prefix  key prefix of the fetch memo: the ids a fetch handed out, kept under
                       <memo_prefix><token_nonce> for min(lease, 10 s); the same call sent
                       again (its reply was lost) hands out the same jobs, not others
  ARGV[9] keep_count   failed jobs to keep (-1 or absent: no count limit; 0: delete at once)
  ARGV[10] keep_age_ms failed jobs older than this are deleted (-1 or absent: none)
  ARGV[11] group_prefix key prefix of per-group keys
  Derived: <job_prefix><id> HASH for each job; <memo_prefix><token_nonce> STRING;
           <group_prefix><group>:parked ZSET (job id -> its wait score),
           <group_prefix><group>:active ZSET (ids taken while the group has max_active;
           those no longer active are dropped when read), <group_prefix><group>:rate ZSET
           (starts of the group's last rate_ms) (same tag; both expire when unused);
           the dependents and early hashes of settle, and each dependent's HASH
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: { ms until the next delayed job is due or a limit lets more start (-1: neither;
             when max_active (the queue's or a group's) held jobs back: -2 - that ms, or
             -2 for neither),
             then groups of 8:
             id, token, task, payload, options, attempt (1-based), max_attempts,
             ms the job waited since it became runnable (its 'ready' time) } ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local count, lease, promote_limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[7])
local keep_count, keep_age = tonumber(ARGV[9] or -1), tonumber(ARGV[10] or -1)
if not count or not lease or not promote_limit or not ARGV[8] or not keep_count
    or not keep_age then
  return bad_input('fetch_jobs', 'count, lease_ms, promote_limit, keep_count and keep_age_ms'
    .. ' must be numbers')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BAND = 1099511627776 -- 2^40
local memo_key = ARGV[8] .. ARGV[6]
local gprefix = ARGV[11] or ''
local SKIP_LIMIT = 1000 -- expired, parked or stale jobs popped per call at most (bounded work)
local UNPARK_LIMIT = 1000 -- parked jobs moved back to wait per call at most
local GROUP_KEY_TTL = 86400000 -- a group's active and rate sets outlive their last use by this

local function next_due(out)
  local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if nxt[2] then out[1] = math.max(tonumber(nxt[2]) - now, 0) end
  return out
end

local memo = redis.call('GET', memo_key)
if memo then -- a replay: the jobs this very call took, those still held under its tokens
  local out = {-1}
  local handed = cmsgpack.unpack(memo)
  for j = 1, #handed, 2 do
    local id, token = handed[j], ARGV[6] .. ':' .. handed[j + 1]
    local job = redis.call('HMGET', prefix .. id, 'task', 'payload', 'opts', 'attempts',
      'max_attempts', 'state', 'token')
    if job[6] == 'active' and job[7] == token then
      local n = #out
      out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, token, job[1], job[2]
      out[n + 5], out[n + 6], out[n + 7], out[n + 8] = job[3], tonumber(job[4]),
        tonumber(job[5]), 0
    end
  end
  return next_due(out)
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, promote_limit)
if #due > 0 then
  local seq = tonumber(redis.call('INCRBY', KEYS[6], #due)) - #due
  for i, id in ipairs(due) do
    local key = prefix .. id
    local priority = tonumber(redis.call('HGET', key, 'priority'))
    if priority then
      redis.call('HSET', key, 'state', 'waiting')
      redis.call('ZADD', KEYS[1], (1000 - priority) * BAND + seq + i, id)
    end
  end
  call_chunked({'ZREM', KEYS[2]}, due)
end

-- group limits: what each group met in this call may still start ({room, rate_bound})
local glim_default, glim_over = nil, false
local gstate = {}

local function parse_limits(text)
  local a, r, ms = string.match(text, '^(%-?%d*):(%-?%d*):(%-?%d*)$')
  return {tonumber(a), tonumber(r), tonumber(ms)}
end

local function group_room(g)
  local s = gstate[g]
  if s then return s end
  local l = glim_default
  if glim_over then
    local o = redis.call('HGET', KEYS[12], g)
    if o then l = parse_limits(o) end
  end
  s = {room = math.huge, rated = false, limits = l}
  if l[1] then -- at most l[1] active: count the group's taken jobs that are still active
    local akey = gprefix .. g .. ':active'
    local n = 0
    for _, id in ipairs(redis.call('ZRANGE', akey, 0, -1)) do
      if redis.call('HGET', prefix .. id, 'state') == 'active' then
        n = n + 1
      else
        redis.call('ZREM', akey, id)
      end
    end
    s.room = l[1] - n
  end
  if l[2] and l[3] then -- at most l[2] starts in any l[3] ms
    local rkey = gprefix .. g .. ':rate'
    redis.call('ZREMRANGEBYSCORE', rkey, '-inf', now - l[3])
    local left = l[2] - redis.call('ZCARD', rkey)
    if left <= s.room then s.room, s.rated = left, true end
  end
  gstate[g] = s
  return s
end

-- a job of group g starts: count it against the group's limits
local function group_start(g, s, id, token)
  s.room = s.room - 1
  local l = s.limits
  if l[1] then
    local akey = gprefix .. g .. ':active'
    redis.call('ZADD', akey, now, id)
    redis.call('PEXPIRE', akey, GROUP_KEY_TTL)
  end
  if l[2] and l[3] then
    local rkey = gprefix .. g .. ':rate'
    redis.call('ZADD', rkey, now, token)
    redis.call('PEXPIRE', rkey, l[3])
  end
  if (l[1] or l[2]) and not s.listed then
    s.listed = true
    redis.call('ZADD', KEYS[13], now + GROUP_KEY_TTL, g)
  end
end

-- when to look at group g's parked jobs again: when its rate window lets one more start,
-- or (held by max_active) at the next fetch, which a finished job brings
local function group_recheck(g, s)
  if s.room > 0 or not s.rated then return now end
  local first = redis.call('ZRANGE', gprefix .. g .. ':rate', 0, 0, 'WITHSCORES')
  if not first[2] then return now end
  return math.max(tonumber(first[2]) + s.limits[3], now + 1)
end

-- waiting -> active for up to `want` jobs (expired ones -> failed, not counted; those of a
-- group without room -> parked); a start is recorded in the rate window when `rated`;
-- `limited`: a limit cut `want` down; `grouped`: group limits apply
local function take(want, rated, limited, v, grouped)
  local out = {-1}
  local leases, handed, expired, skipped = {}, {}, 0, 0
  local parked_groups, parked_n = {}, 0
  local k, exhausted, top = 0, false, v
  -- a job that does not start takes no slot: pop again for it, up to SKIP_LIMIT per call
  while want > 0 do
    local popped = redis.call('ZPOPMIN', KEYS[1], want)
    if #popped < want * 2 then exhausted = true end
    local skipped_now = 0
    for i = 1, #popped, 2 do
      local id, score = popped[i], popped[i + 1]
      local key = prefix .. id
      top = math.max(top, tonumber(score) % BAND)
      local job = redis.call('HMGET', key, 'task', 'payload', 'opts', 'attempts',
        'max_attempts', 'ready', 'expires', 'state', 'group')
      local s = job[9] and grouped and job[8] == 'waiting' and group_room(job[9])
      if not job[1] or job[8] ~= 'waiting' then
        skipped_now = skipped_now + 1 -- cancelled or removed while parked: out of line
      elseif job[7] and tonumber(job[7]) < now then
        skipped_now = skipped_now + 1
        expired = expired + 1
        if keep_count == 0 then
          redis.call('DEL', key)
        else
          redis.call('HSET', key, 'state', 'failed', 'finished', now, 'error',
            'Expired: not started by its deadline (expires_s), ' .. (now - tonumber(job[7]))
            .. ' ms late', 'traceback', '')
          redis.call('ZADD', KEYS[8], now, id)
        end
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'expired', 'id', id)
        settle(flow_keys(prefix, KEYS[1], KEYS[2], KEYS[15], KEYS[8], KEYS[16], KEYS[4],
          KEYS[5], KEYS[6], KEYS[14]), prefix, id, 'x', 'expired', now, maxlen)
      elseif s and s.room <= 0 then
        skipped_now = skipped_now + 1
        redis.call('ZADD', gprefix .. job[9] .. ':parked', score, id)
        parked_groups[job[9]] = s
        parked_n = parked_n + 1
      else
        k = k + 1
        want = want - 1
        local token = ARGV[6] .. ':' .. k
        local attempt = tonumber(job[4]) + 1
        redis.call('HSET', key, 'state', 'active', 'token', token, 'attempts', attempt,
          'worker', ARGV[5], 'started', now)
        leases[#leases + 1] = now + lease
        leases[#leases + 1] = id
        handed[#handed + 1] = id
        handed[#handed + 1] = k
        if rated then redis.call('ZADD', KEYS[9], now, token) end
        if s then group_start(job[9], s, id, token) end
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'active', 'id', id)
        local n = #out
        out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, token, job[1], job[2]
        out[n + 5], out[n + 6], out[n + 7] = job[3], attempt, tonumber(job[5])
        out[n + 8] = math.max(now - (tonumber(job[6]) or now), 0)
      end
    end
    skipped = skipped + skipped_now
    if exhausted or skipped_now == 0 or skipped >= SKIP_LIMIT then break end
  end
  call_chunked({'ZADD', KEYS[3]}, leases)
  for g, s in pairs(parked_groups) do redis.call('ZADD', KEYS[11], group_recheck(g, s), g) end
  if parked_n > 0 then
    redis.call('HINCRBY', KEYS[7], 'parked', parked_n)
    redis.call('HINCRBY', KEYS[14], 'parked', parked_n)
  end
  -- V matters only while groups are in use (without them no place runs ahead of seq)
  if top > v and redis.call('EXISTS', KEYS[10]) == 1 then
    redis.call('HSET', KEYS[7], 'v', top)
    -- a group whose last place is below V gets V next anyway: its entry is not needed
    redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', '(' .. top)
  end
  if expired > 0 then trim_finished(KEYS[8], prefix, now, keep_count, keep_age, expired) end
  if #handed > 0 then
    redis.call('SET', memo_key, cmsgpack.pack(handed), 'PX', math.max(math.min(lease, 10000), 1))
  end
  if not limited and (not exhausted or skipped >= SKIP_LIMIT)
      and redis.call('ZCARD', KEYS[1]) > 0 then
    redis.call('ZADD', KEYS[5], 0, 'w') -- more work: wake another idle worker
  end
  return out
end

-- parked jobs of the groups due for a look go back to wait (in their places) as far as
-- their group has room, at most UNPARK_LIMIT per call; returns the groups looked at
local function unpark(grouped)
  local looked = {}
  local budget = UNPARK_LIMIT
  for _, g in ipairs(redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', now, 'LIMIT', 0, 100)) do
    local s = grouped and group_room(g) or {room = math.huge}
    local pkey = gprefix .. g .. ':parked'
    local n = math.min(s.room, budget)
    if n > 0 then
      local jobs = redis.call('ZPOPMIN', pkey, n)
      local pairs_ = {}
      for i = 1, #jobs, 2 do pairs_[i], pairs_[i + 1] = jobs[i + 1], jobs[i] end
      call_chunked({'ZADD', KEYS[1]}, pairs_)
      budget = budget - #jobs / 2
      redis.call('HINCRBY', KEYS[7], 'parked', -(#jobs / 2))
    end
    looked[#looked + 1] = g
    if budget <= 0 then break end
  end
  return looked
end

local out = {-1}
local meta = count > 0 and redis.call('HMGET', KEYS[7], 'paused', 'rate_max', 'rate_ms',
  'max_active', 'v', 'g_max_active', 'g_rate_max', 'g_rate_ms', 'g_over', 'parked') or {true}
local reopen = -1 -- ms until a limit lets more jobs start (-1: not limited by time)
local held = false -- max_active held jobs back: a job that finishes frees room
if not meta[1] then
  local want = count
  local rate_max, rate_ms = tonumber(meta[2]), tonumber(meta[3])
  local rated = rate_max ~= nil and rate_ms ~= nil
  glim_default = {tonumber(meta[6]), tonumber(meta[7]), tonumber(meta[8])}
  glim_over = meta[9] ~= false and meta[9] ~= nil
  local grouped = glim_over or glim_default[1] ~= nil or glim_default[2] ~= nil
  local looked = {}
  if tonumber(meta[10] or 0) > 0 then looked = unpark(grouped) end
  if grouped then redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', now) end
  if meta[4] then
    local room = tonumber(meta[4]) - redis.call('ZCARD', KEYS[3])
    if room < want then held, want = true, room end
  end
  if rated then
    redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - rate_ms)
    want = math.min(want, rate_max - redis.call('ZCARD', KEYS[9]))
  end
  if want > 0 then
    out = take(want, rated, want < count, tonumber(meta[5] or 0), grouped)
  end
  if want < count and redis.call('ZCARD', KEYS[1]) > 0 then
    redis.call('HINCRBY', KEYS[14], 'limited', 1)
  end
  -- the groups looked at: still parked jobs -> when to look again; none -> off the list
  for _, g in ipairs(looked) do
    if redis.call('EXISTS', gprefix .. g .. ':parked') == 0 then
      redis.call('ZREM', KEYS[11], g)
    else
      redis.call('ZADD', KEYS[11], group_recheck(g, grouped and group_room(g)
        or {room = math.huge}), g)
    end
  end
  if rated and redis.call('ZCARD', KEYS[9]) >= rate_max then
    -- the window is full: when its oldest start leaves it, the next job may start
    local first = redis.call('ZRANGE', KEYS[9], 0, 0, 'WITHSCORES')
    reopen = math.max(tonumber(first[2]) + rate_ms - now, 1)
  end
  if grouped or #looked > 0 then
    -- parked groups: wake at the first one's time; one to look at now is held by max_active
    local first = redis.call('ZRANGE', KEYS[11], 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if at <= now then
        held = true
        local later = redis.call('ZRANGEBYSCORE', KEYS[11], '(' .. now, '+inf', 'WITHSCORES',
          'LIMIT', 0, 1)
        if later[2] then at = tonumber(later[2]) else at = nil end
      end
      if at and (reopen < 0 or at - now < reopen) then reopen = math.max(at - now, 1) end
    end
  end
end
out = next_due(out)
if reopen >= 0 and (out[1] < 0 or reopen < out[1]) then out[1] = reopen end
if held then
  if out[1] < 0 then out[1] = -2 else out[1] = -2 - out[1] end
end
return out
