-- Keeps the answer of a running record (only if it is still this
-- request's: same fingerprint, still running).
--
-- KEYS[1]  the record (see begin.lua)
-- ARGV[1]  the request's fingerprint
-- ARGV[2]  status
-- ARGV[3]  content type
-- ARGV[4]  body
-- ARGV[5]  record lifetime in ms
-- Returns 1 when kept, 0 when the record was no longer this request's.

if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1]
  or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'ctype', ARGV[3], 'body', ARGV[4])
redis.call('HDEL', KEYS[1], 'lease')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
