--[[
  Extends a pause (a global 429 for one identity, or a Cloudflare ban for everything) to at least ARGV[1] ms from
  now. The key's PTTL is the remaining pause, so the pause lives on Redis's clock and disappears by itself.

  Input:
    KEYS[1]  pause key           STRING with PX
    ARGV[1]  pause length, ms

  Output:
    the remaining pause in ms after this call (a longer pause already in place is kept)
]]
local ms = math.ceil(tonumber(ARGV[1]))
local current = redis.call('PTTL', KEYS[1])
if ms > current and ms > 0 then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
  return ms
end
return math.max(current, 0)
