#!lua
--[[ append_log: add one line to an active job's log, fenced by its lease token. The log is
  kept in the job's own hash (fields logs = lines written, log:<n> = line n), so it goes
  with the job; only the last ARGV[5] lines are kept.
  KEYS[1] events    STREAM  capped at about ARGV[6] entries: a 'log' event per line
  ARGV[1] job_prefix   key prefix of job hashes
  ARGV[2] id
  ARGV[3] token
  ARGV[4] line         MessagePack [ms (filled in here: 0), attempt, text]
  ARGV[5] cap          lines kept per job (>= 1)
  ARGV[6] events_maxlen
  Derived: <job_prefix><id> HASH (same hash tag)
  Time:    redis.call('TIME')
  Includes: lib/jobs.lua
  Returns: 1 OK | -1 NO_JOB | -2 LEASE_LOST ]]
--!include jobs
local cap = tonumber(ARGV[5])
if not cap or cap < 1 then return bad_input('append_log', 'cap must be >= 1') end
local line = cmsgpack.unpack(ARGV[4])
if type(line) ~= 'table' or type(line[2]) ~= 'number' or type(line[3]) ~= 'string' then
  return bad_input('append_log', 'line must be [0, attempt, text]')
end
local key = ARGV[1] .. ARGV[2]
local job = redis.call('HMGET', key, 'state', 'token')
if not job[1] then return -1 end
if job[1] ~= 'active' or job[2] ~= ARGV[3] then return -2 end
local t = redis.call('TIME')
line[1] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('HINCRBY', key, 'logs', 1)
redis.call('HSET', key, 'log:' .. n, cmsgpack.pack(line))
if n > cap then redis.call('HDEL', key, 'log:' .. (n - cap)) end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*', 'e', 'log', 'id', ARGV[2], 'n', n)
return 1
