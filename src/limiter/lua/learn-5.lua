--[[
  Applies what one response said and ends the request's admission, exactly as MemoryStore.learn does
  (bucket-rules.ts learnBucket): remembers the route's bucket hash, releases the probe, takes the request out of
  its bucket's and its global window's requests in flight, delays a sublimit, and updates the bucket's counters.

  Input:
    KEYS[1]  route -> hash        STRING: the bucket hash, "" for a route Discord does not bucket, "!" for one
                                  limited without rate-limit headers
    KEYS[2]  admitted bucket      HASH: the bucket admit() gave this request (only used when ARGV[3] is not "")
    KEYS[3]  target bucket        HASH: the bucket the response describes (only used when ARGV[4] is not "")
    KEYS[4]  sublimit             STRING with PX (only written when ARGV[5] is not "")
    KEYS[5]  global window        ZSET: slot id -> when it stops counting (only used when ARGV[15] is not "")
    Unused keys are passed as another key of the same identity, so every key is in one slot.

    ARGV[1]  "h": the route maps to ARGV[2]; "u": the route is not bucketed (unless it is "!"); "!": limited
             without headers; "": leave the mapping alone
    ARGV[2]  X-RateLimit-Bucket hash, or ""
    ARGV[3]  "p" when this request was its bucket's probe, "c" when it was counted in flight, "" for neither
    ARGV[4]  "s" when the target is the admitted bucket, "o" when another one (created only when ARGV[2] is not
             ""), "" for none
    ARGV[5]  sublimit delay, ms, or ""
    ARGV[6]  limit, or ""
    ARGV[7]  remaining, or ""
    ARGV[8]  reset after, ms, or ""
    ARGV[9]  shared-scope block, ms, or ""
    ARGV[10] reset margin, ms
    ARGV[11] the local window the request was admitted in
    ARGV[12] lifetime of a route mapping after it was last learned, ms (a block extends it)
    ARGV[13] idle lifetime of a bucket after its last reset/block/probe, ms
    ARGV[14] global window length, ms
    ARGV[15] the request's global slot id, or ""
    ARGV[16] "1" when the request never left: its global slot stops counting at once
    ARGV[17] the answer's service time, ms: the request reached Discord at least that long before now

  Output:
    1
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local hash = ARGV[2]
local idleMs = tonumber(ARGV[13])
local blockMs = tonumber(ARGV[9])

if ARGV[15] ~= '' and redis.call('ZSCORE', KEYS[5], ARGV[15]) then
  if ARGV[16] == '1' then
    redis.call('ZREM', KEYS[5], ARGV[15])
  else
    redis.call('ZADD', KEYS[5], now - (tonumber(ARGV[17]) or 0) + tonumber(ARGV[14]), ARGV[15])
  end
end

-- A mapping lives at least as long as the block it leads to (memory.ts learn).
local mappedMs = tonumber(ARGV[12]) + math.ceil(blockMs or 0)
if ARGV[1] == 'h' then
  redis.call('SET', KEYS[1], hash, 'PX', mappedMs)
elseif ARGV[1] == '!' then
  redis.call('SET', KEYS[1], '!', 'PX', mappedMs)
elseif ARGV[1] == 'u' and redis.call('GET', KEYS[1]) ~= '!' then
  redis.call('SET', KEYS[1], '', 'PX', mappedMs)
end

if ARGV[3] == 'p' and redis.call('HEXISTS', KEYS[2], 'r') == 1 and redis.call('HEXISTS', KEYS[2], 'l') == 0 then
  -- A probe that found no limits leaves nothing to keep; one that did is converted in place below.
  if hash ~= '' and KEYS[2] == KEYS[3] then
    redis.call('HSET', KEYS[2], 'p', 0)
  else
    redis.call('DEL', KEYS[2])
  end
elseif ARGV[3] == 'c' and (tonumber(redis.call('HGET', KEYS[2], 'i')) or 0) > 0 then
  redis.call('HINCRBY', KEYS[2], 'i', -1)
end

if ARGV[5] ~= '' then
  local ms = math.ceil(tonumber(ARGV[5]))
  if ms > 0 and ms > redis.call('PTTL', KEYS[4]) then redis.call('SET', KEYS[4], '1', 'PX', ms) end
end

if ARGV[4] == '' then return 1 end
local f = redis.call('HMGET', KEYS[3], 'l', 'r', 't', 'f', 'b', 'p', 'w', 'i', 'u')
if not f[2] and hash == '' then return 1 end
local s = {
  l = tonumber(f[1]),
  r = tonumber(f[2]) or 0,
  t = tonumber(f[3]) or 0,
  f = f[4] == '1',
  b = tonumber(f[5]) or 0,
  p = tonumber(f[6]) or 0,
  w = tonumber(f[7]) or 0,
  i = tonumber(f[8]) or 0,
  u = tonumber(f[9]) or 0,
}

-- learnBucket: never raises `remaining` above what we counted ourselves, never moves a known end earlier.
if blockMs then s.b = math.max(s.b, now + blockMs) end
local limit, remaining, resetAfter = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
if limit and remaining and resetAfter then
  local reset = now + resetAfter + tonumber(ARGV[10])
  local same = ARGV[4] == 's' and tonumber(ARGV[11]) == s.w
  if s.l == nil then
    s.l, s.r, s.t, s.f, s.p = limit, remaining, reset, false, 0
  else
    s.l = limit
    if same and s.f then
      -- The first answer of this window: it ends when this answer says, even "in 0".
      s.t, s.f, s.r = reset, false, math.min(s.r, remaining)
    elseif same or ARGV[4] == 'o' then
      s.r = math.min(s.r, remaining)
      if not s.f then s.t = math.max(s.t, reset) end
    end
    -- Otherwise the answer belongs to an earlier window: it says nothing about the current one.
  end
end

local fields = {'r', s.r, 't', s.t, 'f', s.f and 1 or 0, 'b', s.b, 'p', s.p, 'w', s.w, 'i', s.i, 'u', s.u}
if s.l ~= nil then
  table.insert(fields, 'l')
  table.insert(fields, s.l)
end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('PEXPIRE', KEYS[3], math.ceil(math.max(s.t, s.b, s.p, s.u, now) - now + idleMs))
return 1
