-- Ends every session of one user in one shard atomically: no session of
-- theirs in the shard can be loaded once this returns, and none is half
-- deleted (the store runs it on every shard).
--
-- KEYS[1]  the user's index, a set of id hashes in the session's shard
--          (`{prefix}session:{sNN}:user:{id}`, same hash tag: same slot)
-- ARGV[1]  the shard's session key prefix (`{prefix}session:{sNN}:`): member `h` names the
--          session key ARGV[1] .. h (Keys::session builds the same string)
--
-- Returns how many live sessions were ended (index members whose session
-- had already expired or been logged out do not count).

local ended = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    ended = ended + redis.call('DEL', ARGV[1] .. h)
end
redis.call('DEL', KEYS[1])
return ended
