#!lua
--[[ upsert_schedule: (nothing) | another definition -> this definition; the same one changes nothing.
  KEYS[1] schedules  ZSET    schedule name -> due time (ms) of its pending tick; +inf when ended
  ARGV[1] sched_prefix     key prefix of schedule hashes
  ARGV[2] name
  ARGV[3] spec             the definition (MessagePack)
  ARGV[4] digest           SHA-1 of spec
  ARGV[5] expected_digest  compare-and-set: the digest the caller saw ('' for no schedule)
  ARGV[6] expected_tick    compare-and-set: the pending tick the caller saw ('' for none)
  ARGV[7] tick             the pending tick under this definition (ms); -1: ended
  ARGV[8] due              tick plus its jitter (ms)
  Derived: <sched_prefix><name> HASH the schedule (same hash tag)
  Time:    redis.call('TIME')
  Returns: 1 CREATED | 2 REPLACED | 0 UNCHANGED | 3 REPAIRED (same definition; its index entry
           was missing and is restored) | -5 CONFLICT (changed since the caller read it) ]]
local tick = tonumber(ARGV[7])
if not tick or (tick >= 0 and not tonumber(ARGV[8])) then
  return redis.error_reply('ERR upsert_schedule: tick and due must be numbers')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local name = ARGV[2]
local skey = ARGV[1] .. name
local cur = redis.call('HMGET', skey, 'digest', 'tick', 'due')
if cur[1] == ARGV[4] then
  if redis.call('ZSCORE', KEYS[1], name) then return 0 end
  if tonumber(cur[2]) < 0 then
    redis.call('ZADD', KEYS[1], '+inf', name)
  else
    redis.call('ZADD', KEYS[1], cur[3], name)
  end
  return 3
end
if (cur[1] or '') ~= ARGV[5] or (cur[2] or '') ~= ARGV[6] then return -5 end
redis.call('HSET', skey, 'spec', ARGV[3], 'digest', ARGV[4], 'tick', ARGV[7], 'due', ARGV[8],
  'updated', now)
local status = 2
if not cur[1] then
  redis.call('HSET', skey, 'created', now, 'runs', 0)
  status = 1
end
if tick < 0 then
  redis.call('ZADD', KEYS[1], '+inf', name)
else
  redis.call('ZADD', KEYS[1], ARGV[8], name)
end
return status
