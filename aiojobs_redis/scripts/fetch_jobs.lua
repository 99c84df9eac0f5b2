#!lua
--[[ fetch_jobs: delayed -> waiting when due, then waiting -> active for up to ARGV[3] jobs.
  KEYS[1] wait      ZSET    job id -> priority band * 2^40 + sequence
  KEYS[2] delayed   ZSET    job id -> due time (ms)
  KEYS[3] active    ZSET    job id -> lease deadline (ms)
  KEYS[4] events    STREAM  capped at about ARGV[2] entries
  KEYS[5] marker    ZSET    one member; wakes one idle worker
  KEYS[6] seq       STRING  FIFO sequence counter
  KEYS[7] meta      HASH    queue settings; field 'paused'
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
  Derived: <job_prefix><id> HASH for each job; <memo_prefix><token_nonce> STRING (same tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: { ms until the next delayed job is due (-1: none), then groups of 8:
             id, token, task, payload, options, attempt (1-based), max_attempts,
             ms the job waited since it became runnable (its 'ready' time) } ]]
--!include jobs
local prefix, maxlen = ARGV[1], ARGV[2]
local count, lease, promote_limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[7])
if not count or not lease or not promote_limit or not ARGV[8] then
  return bad_input('fetch_jobs', 'count, lease_ms and promote_limit must be numbers')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BAND = 1099511627776 -- 2^40
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

local out = {-1}
if count > 0 and redis.call('HEXISTS', KEYS[7], 'paused') == 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], count)
  local leases, handed = {}, {}
  for i = 1, #popped, 2 do
    local id = popped[i]
    local key = prefix .. id
    local job = redis.call('HMGET', key, 'task', 'payload', 'opts', 'attempts', 'max_attempts',
      'ready')
    if job[1] then
      local token = ARGV[6] .. ':' .. i
      local attempt = tonumber(job[4]) + 1
      redis.call('HSET', key, 'state', 'active', 'token', token, 'attempts', attempt,
        'worker', ARGV[5], 'started', now)
      leases[#leases + 1] = now + lease
      leases[#leases + 1] = id
      handed[#handed + 1] = id
      handed[#handed + 1] = i
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'e', 'active', 'id', id)
      local n = #out
      out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, token, job[1], job[2]
      out[n + 5], out[n + 6], out[n + 7] = job[3], attempt, tonumber(job[5])
      out[n + 8] = math.max(now - (tonumber(job[6]) or now), 0)
    end
  end
  call_chunked({'ZADD', KEYS[3]}, leases)
  if #handed > 0 then
    redis.call('SET', memo_key, cmsgpack.pack(handed), 'PX', math.max(math.min(lease, 10000), 1))
  end
  if #popped == count * 2 and redis.call('ZCARD', KEYS[1]) > 0 then
    redis.call('ZADD', KEYS[5], 0, 'w') -- more work: wake another idle worker
  end
end

return next_due(out)
