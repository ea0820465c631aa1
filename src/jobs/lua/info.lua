-- Reads one job for operators: its record, the worker holding it if it is
-- running, and, for a job of the version before string records (a hash),
-- its fields instead of the record.
--
-- KEYS[1] the job's record   KEYS[2] running hash
-- ARGV[1] job id
-- Returns {record or false, worker or false, {field, value, …} or false}.
local kind = redis.call('TYPE', KEYS[1])['ok']
local worker = redis.call('HGET', KEYS[2], ARGV[1])
if kind == 'string' then
  return {redis.call('GET', KEYS[1]), worker, false}
elseif kind == 'hash' then
  return {false, worker, redis.call('HGETALL', KEYS[1])}
end
return {false, worker, false}
