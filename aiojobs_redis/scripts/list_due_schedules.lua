#!lua
--[[ list_due_schedules: read the schedules whose pending tick is due; drop index entries
     whose schedule hash is gone (a partial wipe), so that they cannot stay due forever.
  KEYS[1] schedules  ZSET    schedule name -> due time (ms) of its pending tick; +inf when ended
  ARGV[1] sched_prefix     key prefix of schedule hashes
  ARGV[2] limit            how many due schedules to return at most
  Derived: <sched_prefix><name> HASH per due schedule (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: { Redis time (ms), ms until the first schedule due after those returned (-1: none),
             then groups of 4: name, digest, pending tick (ms), runs so far } ]]
--!include jobs
local limit = tonumber(ARGV[2])
if not limit then return bad_input('list_due_schedules', 'limit must be a number') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local out = {now, -1}
local gone = {}
for _, name in ipairs(names) do
  local s = redis.call('HMGET', ARGV[1] .. name, 'digest', 'tick', 'runs')
  if s[1] then
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = name, s[1], s[2], s[3] or '0'
  else
    gone[#gone + 1] = name
  end
end
call_chunked({'ZREM', KEYS[1]}, gone)
local nxt = redis.call('ZRANGE', KEYS[1], #names - #gone, #names - #gone, 'WITHSCORES')
if nxt[2] and nxt[2] ~= 'inf' then out[2] = math.max(tonumber(nxt[2]) - now, 0) end
return out
