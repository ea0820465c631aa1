-- Releases a compute lock, only if the caller still holds it (the lock may
-- have expired and been taken by another process since).
--
-- KEYS[1]  the lock
-- ARGV[1]  the holder's token
-- Returns 1 if released, 0 otherwise.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
