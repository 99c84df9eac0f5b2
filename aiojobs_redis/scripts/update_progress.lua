#!lua
--[[ update_progress: record an active job's progress, fenced by its lease token.
  KEYS[1] events    STREAM  capped at about ARGV[2] entries
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] events_maxlen
  ARGV[3] id
  ARGV[4] token
  ARGV[5] progress     MessagePack
  Derived: <job_prefix><id> HASH (same hash tag)
  Returns: 1 OK | -1 NO_JOB | -2 LEASE_LOST ]]
local key = ARGV[1] .. ARGV[3]
local job = redis.call('HMGET', key, 'state', 'token')
if not job[1] then return -1 end
if job[1] ~= 'active' or job[2] ~= ARGV[4] then return -2 end
redis.call('HSET', key, 'progress', ARGV[5])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', 'progress', 'id', ARGV[3],
  'progress', ARGV[5])
return 1
