-- Loads the sessions of every request waiting together (kv/coalesce.rs) in
-- one call, sliding each one's expiry as GETEX … PX does for one.
--
-- KEYS[1..n]  session keys (`{prefix}session:{sNN}:{id_hash}`), repeats allowed
-- ARGV[1]     the session TTL in milliseconds (> 0)
-- Returns one value per key: the user id, or false (nil) for no session.
--
-- On Redis Cluster the caller groups its keys by hash slot first (a script
-- may only touch keys of one slot).

-- A key asked for several times (one session's concurrent requests) is
-- read and slid once: the answer would be the same each time.
local out, seen = {}, {}
for i, key in ipairs(KEYS) do
  local v = seen[key]
  if v == nil then
    v = redis.call('GETEX', key, 'PX', ARGV[1])
    seen[key] = v
  end
  out[i] = v
end
return out
