#!lua
--[[ read_jobs: a page of the jobs in one state with the fields a list shows, in one call.
  Reads only. Pagination is by rank in the state's index: O(log N + page), whatever N.
  KEYS[1] state_set  ZSET  the sorted set of one state (wait, delayed, active, completed,
                           failed: see aiojobs_redis/states.py)
  ARGV[1] job_prefix     key prefix of job hashes
  ARGV[2] offset         rank of the first job of the page
  ARGV[3] limit          jobs in the page at most
  ARGV[4] newest_first   1: highest score first; 0: lowest first (run order for wait)
  ARGV[5] cap            longer field values are cut to this many bytes
  ARGV[6..] groups of 1: field (a job hash field to return for each job)
  Derived: <job_prefix><id> HASH for each job of the page (same hash tag)
  Returns: { jobs in the state, then per job: id and the fields' values (nil if missing) } ]]
local key = KEYS[1]
local offset, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local cap = tonumber(ARGV[5])
if not offset or not limit or not cap then
  return redis.error_reply('ERR read_jobs: offset, limit and cap must be numbers')
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
-- HMGET of the fields in chunks: unpack() of ~8,000 values fails
local function read_fields(job_key)
  local values = {}
  for i = 1, #fields, 1000 do
    local got = redis.call('HMGET', job_key, unpack(fields, i, math.min(i + 999, #fields)))
    for j = 1, #got do values[i + j - 1] = got[j] end
  end
  return values
end
local ids
if ARGV[4] == '1' then
  ids = redis.call('ZRANGE', key, offset, offset + limit - 1, 'REV')
else
  ids = redis.call('ZRANGE', key, offset, offset + limit - 1)
end
local out = {redis.call('ZCARD', key)}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  local values = read_fields(ARGV[1] .. id)
  for j = 1, #fields do
    local v = values[j]
    if v and #v > cap then v = string.sub(v, 1, cap) end
    out[#out + 1] = v
  end
end
return out
