--[[
  Decides whether one request may go now, and takes its slots if so: identity pause, sublimit, bucket, global
  window, in that order, exactly as MemoryStore.admitNow does (bucket-rules.ts checkBucket / takeBucket). The
  Cloudflare pause is checked in process before this script runs (see redis.ts).

  Input:
    KEYS[1]  identity pause      STRING, PTTL = remaining pause
    KEYS[2]  sublimit            STRING, PTTL = remaining delay for this route, major parameter and tag
    KEYS[3]  route -> hash       STRING: the bucket hash, or "" for a route Discord does not bucket
    KEYS[4]  global window       LIST of the identity's last `limit` admission times (ms), newest first
    KEYS[5]  known-bad marks     HASH: field -> expiry (ms, Redis time); "r" the token is revoked,
                                 "g:<major>" the webhook is gone, "f:<routeKey>|<major>" the route is forbidden

    ARGV[1]  bucket key base     e.g. "drlp:{identity}:bucket:"; the bucket key is this plus
                                 "<hash or unk:routeKey>|<major>". It depends on KEYS[3], so it cannot be
                                 declared, but it carries the same {identity} hash tag and lives in the same slot.
    ARGV[2]  routeKey
    ARGV[3]  major
    ARGV[4]  global limit (requests per window; 0 = exempt)
    ARGV[5]  global window length, ms (1000 + margin)
    ARGV[6]  probe timeout, ms
    ARGV[7]  idle lifetime of a bucket after its last reset/block/probe, ms
    ARGV[8]  PROBE_POLL_MS
    ARGV[9]  STALLED_WINDOW_MS

  Output:
    {1, bucketSuffix, probe}  admitted; bucketSuffix is "<hash or unk:routeKey>|<major>" or "" (not bucketed),
                              probe is 1 when this request finds out an unknown bucket's limits
    {0, reason, waitMs}       wait; reason: 1 bucket, 2 probe, 3 blocked, 4 sublimit, 5 global, 6 paused,
                              7 revoked, 8 gone, 9 forbidden (known to fail: answered at once until waitMs);
                              waitMs rounded up so nobody is woken early
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000

local globalLimit = tonumber(ARGV[4])
local probePoll = tonumber(ARGV[8])

local marks = redis.call('HMGET', KEYS[5], 'r', 'g:' .. ARGV[3], 'f:' .. ARGV[2] .. '|' .. ARGV[3])
for i = 1, 3 do
  local expires = tonumber(marks[i])
  if expires and expires > now then return {0, 6 + i, math.ceil(expires - now)} end
end

if globalLimit > 0 then
  local paused = redis.call('PTTL', KEYS[1])
  if paused > 0 then return {0, 6, paused} end
end
local sublimited = redis.call('PTTL', KEYS[2])
if sublimited > 0 then return {0, 4, sublimited} end

local hash = redis.call('GET', KEYS[3])
local suffix = ''
local bucketKey = nil
local s = nil
if hash ~= '' then
  if not hash then hash = 'unk:' .. ARGV[2] end
  suffix = hash .. '|' .. ARGV[3]
  bucketKey = ARGV[1] .. suffix
  local f = redis.call('HMGET', bucketKey, 'l', 'r', 't', 'f', 'b', 'p')
  s = {
    l = tonumber(f[1]),
    r = tonumber(f[2]) or 0,
    t = tonumber(f[3]) or 0,
    f = f[4] == '1',
    b = tonumber(f[5]) or 0,
    p = tonumber(f[6]) or 0,
  }

  -- checkBucket
  if s.b > now then return {0, 3, math.ceil(s.b - now)} end
  if s.l == nil then
    if s.p > now then return {0, 2, math.ceil(math.min(probePoll, s.p - now))} end
    -- The hash is known (another major parameter taught it) but this bucket has no state yet: if this major
    -- parameter's probe from before the hash was known is still out, it answers first (memory.ts probeBeforeHash).
    if string.sub(hash, 1, 4) ~= 'unk:' then
      local early = tonumber(redis.call('HGET', ARGV[1] .. 'unk:' .. ARGV[2] .. '|' .. ARGV[3], 'p'))
      if early and early > now then return {0, 2, math.ceil(math.min(probePoll, early - now))} end
    end
  elseif s.r <= 0 then
    if not s.f then
      if now < s.t then return {0, 1, math.ceil(s.t - now)} end
    elseif now < s.t + tonumber(ARGV[9]) then
      -- Everything of the new window is out and no response has said when it ends yet: ask again shortly.
      return {0, 1, probePoll}
    end
  end
end

if globalLimit > 0 then
  local windowMs = tonumber(ARGV[5])
  local oldest = tonumber(redis.call('LINDEX', KEYS[4], globalLimit - 1))
  if oldest and now - oldest < windowMs then return {0, 5, math.ceil(oldest + windowMs - now)} end
  redis.call('LPUSH', KEYS[4], now)
  redis.call('LTRIM', KEYS[4], 0, globalLimit - 1)
  redis.call('PEXPIRE', KEYS[4], math.ceil(windowMs + 1000))
end

-- Commit the bucket only now: a request turned away by the global window must not use a bucket slot.
local probe = 0
if bucketKey then
  -- takeBucket
  if s.l == nil then
    s.p = now + tonumber(ARGV[6])
    probe = 1
  else
    if now >= s.t and (not s.f or s.r <= 0) then
      if s.f then s.t = now end -- stalled: restart the wait for a first response
      s.r = s.l
      s.f = true
    end
    s.r = s.r - 1
  end
  local fields = {'r', s.r, 't', s.t, 'f', s.f and 1 or 0, 'b', s.b, 'p', s.p}
  if s.l ~= nil then
    table.insert(fields, 'l')
    table.insert(fields, s.l)
  end
  redis.call('HSET', bucketKey, unpack(fields))
  redis.call('PEXPIRE', bucketKey, math.ceil(math.max(s.t, s.b, s.p, now) - now + tonumber(ARGV[7])))
end
return {1, suffix, probe}
