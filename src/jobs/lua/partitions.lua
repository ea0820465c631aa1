-- Records the partition count a process of the queue uses: the key keeps
-- the highest count ever used (a count that was lowered later still has
-- jobs in its higher partitions, which every process keeps serving).
--
-- KEYS[1] highest partition count (string, in partition 0's slot)
-- ARGV[1] this process's partition count
-- Returns the highest count, this one included.
local n = tonumber(ARGV[1])
local highest = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n > highest then
  redis.call('SET', KEYS[1], n)
  highest = n
end
return highest
