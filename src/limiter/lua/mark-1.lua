--[[
  Marks requests as known to fail until an expiry (Redis time), so every replica answers them itself.

  Input:
    KEYS[1]  known-bad marks     HASH: field -> "<expiry ms>:<code>" (see admit.lua for the fields)
    ARGV[1]  field
    ARGV[2]  duration, ms
    ARGV[3]  the code of Discord's answer, repeated by the proxy's own answers

  Output: the mark's expiry, ms (Redis time)
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local untilMs = now + tonumber(ARGV[2])
local function expiry(value)
  return tonumber(string.match(value or '', '^([^:]+)'))
end
local current = expiry(redis.call('HGET', KEYS[1], ARGV[1]))
if current and current > untilMs then untilMs = current end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.3f', untilMs) .. ':' .. ARGV[3])
-- Expired fields would otherwise live as long as the newest mark keeps the key alive.
if redis.call('HLEN', KEYS[1]) > 64 then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if (expiry(all[i + 1]) or 0) <= now then redis.call('HDEL', KEYS[1], all[i]) end
  end
end
local ttl = redis.call('PTTL', KEYS[1])
local wanted = math.ceil(untilMs - now)
if ttl < wanted then redis.call('PEXPIRE', KEYS[1], wanted) end
return untilMs
