--[[
  Applies what responses said and ends the requests' admissions, exactly as MemoryStore.learn does
  (bucket-rules.ts learnBucket), for each answer of one identity in turn (redis.ts batches the answers that come
  back together): remembers the route's bucket hash, releases the probe, takes the request out of its bucket's and
  its global window's requests in flight, delays a sublimit, and updates the bucket's counters.

  Input (numkeys = 1 + 4 x n for n answers; every key carries the identity's hash tag, so one slot):
    KEYS[1]  global window        ZSET: slot id -> when it stops counting (only used when the slot is not "")
    then for each answer i (from 0):
    KEYS[2 + 4i]  route -> hash   STRING: the bucket hash, "" for a route Discord does not bucket, "!" for one
                                  limited without rate-limit headers
    KEYS[3 + 4i]  admitted bucket HASH: the bucket admit() gave this request (only used when `ended` is not "")
    KEYS[4 + 4i]  target bucket   HASH: the bucket the response describes (only used when `targetKind` is not "")
    KEYS[5 + 4i]  sublimit        STRING with PX (only written when `subMs` is not "")
    Unused keys are passed as another key of the same identity.

    ARGV[1]  reset margin, ms
    ARGV[2]  lifetime of a route mapping after it was last learned, ms (a block extends it)
    ARGV[3]  idle lifetime of a bucket after its last reset/block/probe, ms
    ARGV[4]  global window length, ms
    then for each answer i, 13 values from ARGV[5 + 13i]:
      mapping       "h": the route maps to hashArg; "u": the route is not bucketed (unless it is "!"); "!": limited
                    without headers; "": leave the mapping alone
      hashArg       X-RateLimit-Bucket hash, or ""
      ended         "p" when this request was its bucket's probe, "c" when it was counted in flight, "" for neither
      targetKind    "s" when the target is the admitted bucket, "o" when another one (created only when hashArg is
                    not ""), "" for none
      subMs         sublimit delay, ms, or ""
      limitArg, remainingArg, resetArg   limit, remaining, reset after (ms), or ""
      blockArg      shared-scope block, ms, or ""
      window        the local window the request was admitted in
      slot          the request's global slot id, or ""
      unsent        "1" when the request never left: its global slot stops counting at once
      serviceMs     the answer's service time, ms: the request reached Discord at least that long before now

  Output:
    1
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local gslotsKey = KEYS[1]
local marginMs, mappingMs, idleMs, windowMs = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]

local function learn(routeKeyName, admittedKey, targetKey, subKey, mapping, hashArg, ended, targetKind, subMs,
    limitArg, remainingArg, resetArg, blockArg, window, slot, unsent, serviceMs)
  local hash = hashArg
  local blockMs = tonumber(blockArg)

  if slot ~= '' and redis.call('ZSCORE', gslotsKey, slot) then
    if unsent == '1' then
      redis.call('ZREM', gslotsKey, slot)
    else
      redis.call('ZADD', gslotsKey, now - (tonumber(serviceMs) or 0) + tonumber(windowMs), slot)
    end
  end

  -- A mapping lives at least as long as the block it leads to (memory.ts learn).
  local mappedMs = tonumber(mappingMs) + math.ceil(blockMs or 0)
  if mapping == 'h' then
    redis.call('SET', routeKeyName, hash, 'PX', mappedMs)
  elseif mapping == '!' then
    redis.call('SET', routeKeyName, '!', 'PX', mappedMs)
  elseif mapping == 'u' and redis.call('GET', routeKeyName) ~= '!' then
    redis.call('SET', routeKeyName, '', 'PX', mappedMs)
  end

  if ended == 'p' and redis.call('HEXISTS', admittedKey, 'r') == 1 and redis.call('HEXISTS', admittedKey, 'l') == 0 then
    -- A probe that found no limits leaves nothing to keep; one that did is converted in place below.
    if hash ~= '' and admittedKey == targetKey then
      redis.call('HSET', admittedKey, 'p', 0)
    else
      redis.call('DEL', admittedKey)
    end
  elseif ended == 'c' and (tonumber(redis.call('HGET', admittedKey, 'i')) or 0) > 0 then
    redis.call('HINCRBY', admittedKey, 'i', -1)
  end

  if subMs ~= '' then
    local ms = math.ceil(tonumber(subMs))
    if ms > 0 and ms > redis.call('PTTL', subKey) then redis.call('SET', subKey, '1', 'PX', ms) end
  end

  if targetKind == '' then return end
  local f = redis.call('HMGET', targetKey, 'l', 'r', 't', 'f', 'b', 'p', 'w', 'i', 'u')
  if not f[2] and hash == '' then return end
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
  local limit, remaining, resetAfter = tonumber(limitArg), tonumber(remainingArg), tonumber(resetArg)
  if limit and remaining and resetAfter then
    local reset = now + resetAfter + tonumber(marginMs)
    local same = targetKind == 's' and tonumber(window) == s.w
    if s.l == nil then
      s.l, s.r, s.t, s.f, s.p = limit, remaining, reset, false, 0
    else
      s.l = limit
      if same and s.f then
        -- The first answer of this window: it ends when this answer says, even "in 0".
        s.t, s.f, s.r = reset, false, math.min(s.r, remaining)
      elseif same or targetKind == 'o' then
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
  redis.call('HSET', targetKey, unpack(fields))
  redis.call('PEXPIRE', targetKey, math.ceil(math.max(s.t, s.b, s.p, s.u, now) - now + idleMs))
end

for i = 0, (#KEYS - 1) / 4 - 1 do
  local k, a = 2 + 4 * i, 5 + 13 * i
  learn(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], ARGV[a + 12])
end
return 1
