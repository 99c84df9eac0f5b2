#!lua flags=allow-oom
--[[ record_metrics: add a batch of counts to the current minute's slot of the metrics ring
  and to the cumulative totals. Never a key per job: two hashes of bounded size per queue.
  A slot holds "minute c1 c2 ... cN" (space-separated integers, trailing zeros dropped); a slot
  stamped with another minute is stale (a day old) and starts again from zero.
  KEYS[1] metrics        HASH  slot (unix minute mod ARGV[1]) -> "minute c1 c2 ..."
  KEYS[2] metrics_total  HASH  counter name -> cumulative count since the queue began
  ARGV[1] slots        size of the ring in one-minute slots (1440: 24 h)
  ARGV[2] width        counters per slot
  ARGV[3] batch_id     fresh per batch ('' : none); a batch seen in the last 5 s is not
                       counted again (a call re-sent after its reply was lost)
  ARGV[4..] groups of 3: index (1-based position in a slot), field (its name in the totals), increment
  Derived: <KEYS[1]>:batch:<batch_id> STRING, expires after 5 s (same hash tag)
  Time:    redis.call('TIME')
  Returns: the unix minute the counts were added to (-1: a batch counted already) ]]
local t = redis.call('TIME')
local minute = math.floor(tonumber(t[1]) / 60)
local slots, width = tonumber(ARGV[1]), tonumber(ARGV[2])
-- validate first, write last
if not slots or slots < 1 or not width or width < 0 or (#ARGV - 3) % 3 ~= 0 then
  return redis.error_reply('ERR record_metrics: bad slots, width or group count')
end
for i = 4, #ARGV, 3 do
  local index, inc = tonumber(ARGV[i]), tonumber(ARGV[i + 2])
  if not index or index < 1 or index > width or not inc or inc ~= math.floor(inc) then
    return redis.error_reply('ERR record_metrics: bad group at ARGV[' .. i .. ']')
  end
end
if ARGV[3] ~= '' and not redis.call('SET', KEYS[1] .. ':batch:' .. ARGV[3], 1, 'NX', 'PX',
    5000) then
  return -1
end
local slot = minute % slots
local counts = {}
for j = 1, width do counts[j] = 0 end
local old = redis.call('HGET', KEYS[1], slot)
if old then
  local j = -1
  for word in string.gmatch(old, '%S+') do
    if j == -1 then
      if tonumber(word) ~= minute then break end
    elseif j < width then
      counts[j + 1] = tonumber(word)
    end
    j = j + 1
  end
end
for i = 4, #ARGV, 3 do
  local index, inc = tonumber(ARGV[i]), tonumber(ARGV[i + 2])
  counts[index] = counts[index] + inc
  redis.call('HINCRBY', KEYS[2], ARGV[i + 1], inc)
end
local last = width
while last > 0 and counts[last] == 0 do last = last - 1 end
local parts = {string.format('%d', minute)}
for j = 1, last do parts[j + 1] = string.format('%d', counts[j]) end
redis.call('HSET', KEYS[1], slot, table.concat(parts, ' '))
return minute
