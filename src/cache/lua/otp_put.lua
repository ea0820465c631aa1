-- Stores a fresh one-time code, replacing any earlier one (and its attempt
-- count).
--
-- KEYS[1]  the code's key (a hash: `hash` = SHA-256 of key and code,
--          `attempts` = wrong tries so far)
-- ARGV[1]  the code hash (hex)
-- ARGV[2]  time to live in milliseconds
-- Returns 1.

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'attempts', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
