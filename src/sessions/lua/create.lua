-- Records one session and indexes it under its user, atomically, in one
-- round trip. The user's index outlives every session it lists (its TTL is
-- only ever pushed out), and once it grows past a few dozen entries the
-- hashes of sessions that have already ended are dropped from it, so an
-- active user's index stays small.
--
-- KEYS[1]  the session key (`{prefix}session:{sNN}:{id_hash}`)
-- KEYS[2]  the user's index, a set of id hashes in the session's shard
--          (`{prefix}session:{sNN}:user:{id}`, same hash tag: same slot)
-- ARGV[1]  the user id (the session's value)
-- ARGV[2]  the session TTL in milliseconds (> 0)
-- ARGV[3]  the id hash (the index member)
-- ARGV[4]  the shard's session key prefix (`{prefix}session:{sNN}:`), so that an index
--          member `h` names the key ARGV[4] .. h (Keys::session builds the
--          same string)
--
-- Returns 1.

redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])

if redis.call('SCARD', KEYS[2]) > 32 then
    for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do
        if redis.call('EXISTS', ARGV[4] .. h) == 0 then
            redis.call('SREM', KEYS[2], h)
        end
    end
end

local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then
    redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
