#!lua flags=allow-oom
--[[ extend_leases: active -> active with a later lease deadline, for a batch, fenced by token.
  KEYS[1] active    ZSET    job id -> lease deadline (ms)
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] lease_ms     new deadline = now + lease_ms
  ARGV[3..] groups of 2: id, token
  Derived: <job_prefix><id> HASH for each job (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: { the ids whose lease is lost (token changed, job gone or no longer active),
             the ids of these jobs whose cancel was requested (field cancelled_by): a
             worker that missed the published request learns it here } ]]
--!include jobs
local lease = tonumber(ARGV[2])
if not lease then return bad_input('extend_leases', 'lease_ms must be a number') end
if (#ARGV - 2) % 2 ~= 0 then return bad_input('extend_leases', 'an id without its token') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + lease
local lost, leases, cancel = {}, {}, {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local job = redis.call('HMGET', ARGV[1] .. id, 'state', 'token', 'cancelled_by')
  if job[1] == 'active' and job[2] == ARGV[i + 1] then
    leases[#leases + 1] = deadline
    leases[#leases + 1] = id
    if job[3] then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
call_chunked({'ZADD', KEYS[1], 'XX'}, leases)
return {lost, cancel}
