--[[
  Applies what one response said, exactly as MemoryStore.learn does (bucket-rules.ts learnBucket): remembers the
  route's bucket hash, releases the probe, delays a sublimit, and updates the bucket's counters.

  Input:
    KEYS[1]  route -> hash        STRING: the bucket hash, or "" for a route Discord does not bucket
    KEYS[2]  probed bucket        HASH: the bucket admit() gave this request (only read when ARGV[3] = "1")
    KEYS[3]  target bucket        HASH: the bucket the response describes (only used when ARGV[4] = "1")
    KEYS[4]  sublimit             STRING with PX (only written when ARGV[5] is not "")
    Unused keys are passed as another key of the same identity, so every key is in one slot.

    ARGV[1]  "h": the route maps to ARGV[2]; "u": the route is not bucketed; "": leave the mapping alone
    ARGV[2]  X-RateLimit-Bucket hash, or ""
    ARGV[3]  "1" when this request was its bucket's probe
    ARGV[4]  "1" when there is a target bucket (created only when ARGV[2] is not "")
    ARGV[5]  sublimit delay, ms, or ""
    ARGV[6]  limit, or ""
    ARGV[7]  remaining, or ""
    ARGV[8]  reset after, ms, or ""
    ARGV[9]  shared-scope block, ms, or ""
    ARGV[10] reset margin, ms
    ARGV[11] SAME_WINDOW_TOLERANCE_MS
    ARGV[12] lifetime of a route mapping after it was last learned, ms
    ARGV[13] idle lifetime of a bucket after its last reset/block/probe, ms

  Output:
    1
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local hash = ARGV[2]
local idleMs = tonumber(ARGV[13])

if ARGV[1] == 'h' then
  redis.call('SET', KEYS[1], hash, 'PX', ARGV[12])
elseif ARGV[1] == 'u' then
  redis.call('SET', KEYS[1], '', 'PX', ARGV[12])
end

if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[2], 'r') == 1 and redis.call('HEXISTS', KEYS[2], 'l') == 0 then
  -- A probe that found no limits leaves nothing to keep; one that did is converted in place below.
  if hash ~= '' and KEYS[2] == KEYS[3] then
    redis.call('HSET', KEYS[2], 'p', 0)
  else
    redis.call('DEL', KEYS[2])
  end
end

if ARGV[5] ~= '' then
  local ms = math.ceil(tonumber(ARGV[5]))
  if ms > 0 and ms > redis.call('PTTL', KEYS[4]) then redis.call('SET', KEYS[4], '1', 'PX', ms) end
end

if ARGV[4] ~= '1' then return 1 end
local f = redis.call('HMGET', KEYS[3], 'l', 'r', 't', 'f', 'b', 'p')
if not f[2] and hash == '' then return 1 end
local s = {
  l = tonumber(f[1]),
  r = tonumber(f[2]) or 0,
  t = tonumber(f[3]) or 0,
  f = f[4] == '1',
  b = tonumber(f[5]) or 0,
  p = tonumber(f[6]) or 0,
}

-- learnBucket: never raises `remaining` above what we counted ourselves.
local blockMs = tonumber(ARGV[9])
if blockMs then s.b = math.max(s.b, now + blockMs) end
local limit, remaining, resetAfter = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
if limit and remaining and resetAfter then
  local reset = now + resetAfter + tonumber(ARGV[10])
  local tolerance = tonumber(ARGV[11])
  if s.l == nil then
    s.l, s.r, s.t, s.f, s.p = limit, remaining, reset, false, 0
  elseif resetAfter > tolerance then
    -- (An answer that left Discord after its window had ended says "resets in 0": it describes no window still
    -- running, least of all a new one; bucket-rules.ts learnBucket.)
    s.l = limit
    if reset > s.t + tolerance then
      -- A window that ends later than the one we knew: the first answer after a local reset, or a request that
      -- reached Discord just after its reset.
      s.t, s.f, s.r = reset, false, math.min(s.r, remaining)
    elseif not s.f and reset >= s.t - tolerance then
      s.r, s.t = math.min(s.r, remaining), math.max(s.t, reset)
    end
    -- Otherwise the answer belongs to a window that is already over: it says nothing about the current one.
  else
    s.l = limit
  end
end

local fields = {'r', s.r, 't', s.t, 'f', s.f and 1 or 0, 'b', s.b, 'p', s.p}
if s.l ~= nil then
  table.insert(fields, 'l')
  table.insert(fields, s.l)
end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('PEXPIRE', KEYS[3], math.ceil(math.max(s.t, s.b, s.p, now) - now + idleMs))
return 1
