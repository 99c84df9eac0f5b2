#!lua
--[[ read_jobs: a page of the jobs in one state with the fields a list shows, in one call.
  Reads only. Pagination is by rank in the state's index: O(log N + page), whatever N.
  KEYS[1] wait       ZSET  job id -> priority band * 2^40 + sequence
  KEYS[2] delayed    ZSET  job id -> due time (ms)
  KEYS[3] active     ZSET  job id -> lease deadline (ms)
  KEYS[4] completed  ZSET  job id -> finished at (ms)
  KEYS[5] failed     ZSET  job id -> finished at (ms)
  ARGV[1] job_prefix     key prefix of job hashes
  ARGV[2] state_index    which of KEYS to read (1-5)
  ARGV[3] offset         rank of the first job of the page
  ARGV[4] limit          jobs in the page at most
  ARGV[5] newest_first   1: highest score first; 0: lowest first (run order for wait)
  ARGV[6] cap            longer field values are cut to this many bytes
  ARGV[7..] groups of 1: field (a job hash field to return for each job)
  Derived: <job_prefix><id> HASH for each job of the page (same hash tag)
  Returns: { jobs in the state, then per job: id and the fields' values (nil if missing) } ]]
local keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}
local key = keys[tonumber(ARGV[2])]
if not key then return redis.error_reply('ERR read_jobs: state_index must be 1-5') end
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = {}
local cap = tonumber(ARGV[6])
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local ids
if ARGV[5] == '1' then
  ids = redis.call('ZRANGE', key, offset, offset + limit - 1, 'REV')
else
  ids = redis.call('ZRANGE', key, offset, offset + limit - 1)
end
local out = {redis.call('ZCARD', key)}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  local values = redis.call('HMGET', ARGV[1] .. id, unpack(fields))
  for j = 1, #fields do
    local v = values[j]
    if v and #v > cap then v = string.sub(v, 1, cap) end
    out[#out + 1] = v
  end
end
return out
