#!lua
--[[ remove_schedule: a schedule -> (nothing); its jobs already enqueued stay.
  KEYS[1] schedules  ZSET    schedule name -> due time (ms) of its pending tick; +inf when ended
  ARGV[1] sched_prefix     key prefix of schedule hashes
  ARGV[2] name
  Derived: <sched_prefix><name> HASH the schedule (same hash tag)
  Returns: 1 OK (removed) | 0 NOT_FOUND ]]
local removed = redis.call('DEL', ARGV[1] .. ARGV[2]) + redis.call('ZREM', KEYS[1], ARGV[2])
if removed > 0 then return 1 end
return 0
