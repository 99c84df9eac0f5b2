#!lua
--[[ fetch_jobs: delayed -> waiting when due, then waiting -> active for up to ARGV[3] jobs.
  A job taken after its 'expires' time (JobOptions.expires_s) -> failed as expired instead.
  The queue's limits (meta: rate_max starts per rate_ms, max_active jobs active at once,
  across all workers) bound how many are taken; a limited call says when to ask again.
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
  Derived: <job_prefix><id> HASH for each job; <memo_prefix><token_nonce> STRING (same tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: { ms until the next delayed job is due or a limit lets more start (-1: neither;
             when max_active held jobs back: -2 - that ms, or -2 for neither),
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
local EXPIRE_LIMIT = 1000 -- expired jobs handled per call at most (bounded work)
local memo_key = ARGV[8] .. ARGV[6]

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

-- waiting -> active for up to `want` jobs (expired ones -> failed, not counted); a start
-- is recorded in the rate window when `rated`; `limited`: a limit cut `want` down
local function take(want, rated, limited, v)
  local out = {-1}
  local leases, handed, expired = {}, {}, 0
  local k, exhausted, top = 0, false, v
  -- an expired job takes no slot: pop again for it, up to EXPIRE_LIMIT of them per call
  while want > 0 do
    local popped = redis.call('ZPOPMIN', KEYS[1], want)
    if #popped < want * 2 then exhausted = true end
    local expired_now = 0
    for i = 1, #popped, 2 do
      local id = popped[i]
      local key = prefix .. id
      top = math.max(top, tonumber(popped[i + 1]) % BAND)
      local job = redis.call('HMGET', key, 'task', 'payload', 'opts', 'attempts',
        'max_attempts', 'ready', 'expires')
      if job[1] and job[7] and tonumber(job[7]) < now then
        expired_now = expired_now + 1
        if keep_count == 0 then
          redis.call('DEL', key)
        else
          redis.call('HSET', key, 'state', 'failed', 'finished', now, 'error',
            'Expired: not started by its deadline (expires_s), ' .. (now - tonumber(job[7]))
            .. ' ms late', 'traceback', '')
          redis.call('ZADD', KEYS[8], now, id)
        end
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'expired', 'id', id)
      elseif job[1] then
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
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'active', 'id', id)
        local n = #out
        out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, token, job[1], job[2]
        out[n + 5], out[n + 6], out[n + 7] = job[3], attempt, tonumber(job[5])
        out[n + 8] = math.max(now - (tonumber(job[6]) or now), 0)
      end
    end
    expired = expired + expired_now
    if exhausted or expired_now == 0 or expired >= EXPIRE_LIMIT then break end
  end
  call_chunked({'ZADD', KEYS[3]}, leases)
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
  if not limited and (not exhausted or expired >= EXPIRE_LIMIT)
      and redis.call('ZCARD', KEYS[1]) > 0 then
    redis.call('ZADD', KEYS[5], 0, 'w') -- more work: wake another idle worker
  end
  return out
end

local out = {-1}
local meta = count > 0 and redis.call('HMGET', KEYS[7], 'paused', 'rate_max', 'rate_ms',
  'max_active', 'v') or {true}
local reopen = -1 -- ms until a limit lets more jobs start (-1: not limited by time)
local held = false -- max_active held jobs back: a job that finishes frees room
if not meta[1] then
  local want = count
  local rate_max, rate_ms = tonumber(meta[2]), tonumber(meta[3])
  local rated = rate_max ~= nil and rate_ms ~= nil
  if meta[4] then
    local room = tonumber(meta[4]) - redis.call('ZCARD', KEYS[3])
    if room < want then held, want = true, room end
  end
  if rated then
    redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - rate_ms)
    want = math.min(want, rate_max - redis.call('ZCARD', KEYS[9]))
  end
  if want > 0 then out = take(want, rated, want < count, tonumber(meta[5] or 0)) end
  if rated and redis.call('ZCARD', KEYS[9]) >= rate_max then
    -- the window is full: when its oldest start leaves it, the next job may start
    local first = redis.call('ZRANGE', KEYS[9], 0, 0, 'WITHSCORES')
    reopen = math.max(tonumber(first[2]) + rate_ms - now, 1)
  end
end
out = next_due(out)
if reopen >= 0 and (out[1] < 0 or reopen < out[1]) then out[1] = reopen end
if held then
  if out[1] < 0 then out[1] = -2 else out[1] = -2 - out[1] end
end
return out
