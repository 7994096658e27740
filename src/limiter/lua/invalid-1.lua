--[[
  Counts invalid responses (401, 403, non-shared 429) of this egress in a sliding window kept as slots.

  Input:
    KEYS[1]  invalid counter     HASH: slot number (floor(Redis time / slot length)) -> count
    ARGV[1]  invalid responses to add now (0 only reads)
    ARGV[2]  slot length, ms
    ARGV[3]  slots in the window

  Output: invalid responses in the window, this one included
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local slotMs = tonumber(ARGV[2])
local slot = math.floor(now / slotMs)
local oldest = slot - tonumber(ARGV[3]) + 1
local add = tonumber(ARGV[1])
if add > 0 then
  redis.call('HINCRBY', KEYS[1], slot, add)
  redis.call('PEXPIRE', KEYS[1], slotMs * (tonumber(ARGV[3]) + 1))
end
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i]) < oldest then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(all[i + 1])
  end
end
return total
