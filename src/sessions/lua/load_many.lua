-- Loads the sessions of every request waiting together (kv/coalesce.rs) in
-- one call, sliding each one's expiry as GETEX … PX does for one.
--
-- KEYS[1..n]  session keys (`{prefix}session:{sNN}:{id_hash}`), repeats allowed
-- ARGV[1]     the session TTL in milliseconds (> 0)
-- Returns one value per key: the user id, or false (nil) for no session.
--
-- On Redis Cluster the caller groups its keys by hash slot first (a script
-- may only touch keys of one slot).

local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('GETEX', key, 'PX', ARGV[1])
end
return out
