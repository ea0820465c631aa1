-- One try at a one-time code: check and consume in one atomic step, so a
-- code is accepted at most once and at most ARGV[2] wrong tries are made.
--
-- KEYS[1]  the code's key (hash written by otp_put.lua)
-- ARGV[1]  SHA-256 (hex) of key and the candidate code
-- ARGV[2]  maximum wrong tries
-- Returns 'accepted' (code consumed), 'rejected' (one try used; the code is
-- deleted at the last one) or 'missing' (no live code).
--
-- The comparison below is a plain string compare, not constant time. That
-- is acceptable: what is compared are hashes. The attacker chooses the
-- code, not its hash, so timing can tell at most how many leading hex digits
-- of SHA-256(key:guess) match the stored hash, which says nothing useful
-- about the code (finding a code whose hash shares a longer prefix is a
-- preimage search); and the attempt limit caps the guesses anyway.

local stored = redis.call('HGET', KEYS[1], 'hash')
if not stored then
  return 'missing'
end
local max = tonumber(ARGV[2])
local used = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if used >= max then
  redis.call('DEL', KEYS[1])
  return 'missing'
end
if stored == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 'accepted'
end
used = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if used >= max then
  redis.call('DEL', KEYS[1])
end
return 'rejected'
