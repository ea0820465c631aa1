-- Decides what a request with an Idempotency-Key does, in one step.
--
-- KEYS[1]  the record (a hash: `fp` = the request's fingerprint, `state` =
--          `running` or `done`, `lease` = Unix ms a running record is held
--          until, `status`, `ctype`, `body` = the answer once done)
-- ARGV[1]  this request's fingerprint
-- ARGV[2]  now, Unix ms
-- ARGV[3]  lease in ms
-- ARGV[4]  record lifetime in ms
-- Returns {'proceed'} (the record is now this request's, running),
-- {'running'}, {'mismatch'} or {'done', status, content type, body}.

local fp = redis.call('HGET', KEYS[1], 'fp')
if fp then
  if fp ~= ARGV[1] then
    return {'mismatch'}
  end
  local state = redis.call('HGET', KEYS[1], 'state')
  if state == 'done' then
    local a = redis.call('HMGET', KEYS[1], 'status', 'ctype', 'body')
    return {'done', a[1], a[2], a[3]}
  end
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
  if lease > tonumber(ARGV[2]) then
    return {'running'}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'running',
  'lease', tonumber(ARGV[2]) + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'proceed'}
