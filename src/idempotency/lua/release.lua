-- Drops a running record of this request (a done one stays).
--
-- KEYS[1]  the record (see begin.lua)
-- ARGV[1]  the request's fingerprint
-- Returns 1 when dropped, else 0.

if redis.call('HGET', KEYS[1], 'fp') == ARGV[1]
  and redis.call('HGET', KEYS[1], 'state') == 'running' then
  return redis.call('DEL', KEYS[1])
end
return 0
