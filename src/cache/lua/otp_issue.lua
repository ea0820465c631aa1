-- Issues a one-time code: keeps the live one (so that asking again mails
-- the same code instead of voiding it), or stores the given one.
--
-- KEYS[1]  the code's key (a hash: `hash` = SHA-256 of key and code,
--          `sealed` = the code sealed for mailing again, `attempts` =
--          wrong tries so far)
-- ARGV[1]  the new code's hash (hex)
-- ARGV[2]  the new code, sealed (`nonce:digits`)
-- ARGV[3]  time to live in milliseconds
-- ARGV[4]  wrong tries that make a code dead
-- Returns {sealed value of the code now live, its remaining milliseconds}.
-- A code stored without a sealed value (by otp_put.lua, or before this
-- script existed) cannot be mailed again and is replaced.

local sealed = redis.call('HGET', KEYS[1], 'sealed')
if sealed then
  local used = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
  local left = redis.call('PTTL', KEYS[1])
  if used < tonumber(ARGV[4]) and left > 0 then
    return {sealed, left}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'sealed', ARGV[2], 'attempts', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {ARGV[2], tonumber(ARGV[3])}
