--[[
  Applies what responses said and ends the requests' admissions, exactly as MemoryStore.learn does
  (bucket-rules.ts learnBucket), for each answer of one identity in turn (redis.ts batches the answers that come
  back together): remembers the route's bucket hash, releases the probe, takes the request out of its bucket's and
  its global window's requests in flight, delays a sublimit, and updates the bucket's counters.

  Input (numkeys = 2; every key the script touches carries the identity's hash tag, so one slot):
    KEYS[1]  global window        ZSET: slot id -> when it stops counting (only used when the slot is not "")
    KEYS[2]  any sublimit         STRING, PX = the longest sublimit delay of the identity (admit.lua reads it first)

    ARGV[1]  reset margin, ms
    ARGV[2]  lifetime of a route mapping after it was last learned, ms (a block extends it)
    ARGV[3]  idle lifetime of a bucket after its last reset/block/probe, ms
    ARGV[4]  global window length, ms
    ARGV[5]  the identity's key base, e.g. "drlp:{identity}:"; the keys of each answer are built from it (as
             admit.lua builds bucket keys), so that an answer costs one argument instead of four long key names:
               P{I}:route:<routeKey>                route -> hash: the bucket hash, "" for a route Discord does not
                                                    bucket, "!" for one limited without rate-limit headers
               P{I}:bucket:<admitted>               the bucket admit() gave this request (when `ended` is not "")
               P{I}:bucket:<hashArg>|<major>        the bucket the response describes, when hashArg is not ""
                                                    (otherwise the admitted one)
               P{I}:sub:<routeKey>|<major>|<tag>    the sublimit delay (written when `subMs` is not "")
    then one argument per answer, ARGV[6 + i]: its 17 fields joined by "\n" (no field can hold one: route keys
    and ids come from a parsed request target, the hash from a parsed response header):
      routeKey, major
      admitted      the admitted bucket's suffix ("<hash or unk:routeKey>|<major>"), or ""
      tag           the sublimit tag (used when `subMs` is not "")
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
      unsent        "1" when the request never left: its global slot stops counting at once (and its bucket place
                    comes back while the window lasts)
      serviceMs     the answer's service time, ms: the request reached Discord at least that long before now

  Output:
    1

  Cost: as in admit.lua, each bucket and route mapping is read once and written once per run, and the global slots
  are redated (ZADD XX) and given back (ZREM) in one command each.
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local gslotsKey, subsKey = KEYS[1], KEYS[2]
local marginMs, mappingMs, idleMs, windowMs = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local redated = {} -- score, slot, ... for one ZADD XX at the end
local unsentSlots = {} -- slots for one ZREM at the end
local routes = {} -- route key name -> {value, px}: the mapping to write at the end
local buckets = {} -- bucket key -> state, read once, changed in place
local changed = {} -- bucket keys to write back at the end, in order

local function bucket(key)
  local s = buckets[key]
  if s then return s end
  local f = redis.call('HMGET', key, 'l', 'r', 't', 'f', 'b', 'p', 'w', 'i', 'u')
  s = {
    exists = f[2] ~= false,
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
  buckets[key] = s
  return s
end

local function change(key, s)
  s.exists = true
  if not s.changed then
    s.changed = true
    changed[#changed + 1] = key
  end
end

local function mapRoute(key, value, px)
  routes[key] = {value, px}
end

local function mappedRoute(key)
  local pending = routes[key]
  if pending then return pending[1] end
  return redis.call('GET', key)
end

local function learn(routeKeyName, admittedKey, targetKey, subKey, mapping, hashArg, ended, targetKind, subMs,
    limitArg, remainingArg, resetArg, blockArg, window, slot, unsent, serviceMs)
  local hash = hashArg
  local blockMs = tonumber(blockArg)

  if slot ~= '' then
    if unsent == '1' then
      unsentSlots[#unsentSlots + 1] = slot
    else
      redated[#redated + 1] = now - (tonumber(serviceMs) or 0) + windowMs
      redated[#redated + 1] = slot
    end
  end

  -- A mapping lives at least as long as the block it leads to (memory.ts learn).
  local mappedMs = mappingMs + math.ceil(blockMs or 0)
  if mapping == 'h' then
    mapRoute(routeKeyName, hash, mappedMs)
  elseif mapping == '!' then
    mapRoute(routeKeyName, '!', mappedMs)
  elseif mapping == 'u' and mappedRoute(routeKeyName) ~= '!' then
    mapRoute(routeKeyName, '', mappedMs)
  end

  if ended == 'p' then
    local a = bucket(admittedKey)
    if a.exists and a.l == nil then
      -- A probe that found no limits leaves nothing to keep; one that did is converted in place below.
      if hash ~= '' and admittedKey == targetKey then
        a.p = 0
        change(admittedKey, a)
      else
        -- From here on the run sees the bucket as absent, as Redis will.
        a.l, a.r, a.t, a.f, a.b, a.p, a.w, a.i, a.u = nil, 0, 0, false, 0, 0, 0, 0, 0
        a.deleted = true
        a.exists = false
        if not a.changed then
          a.changed = true
          changed[#changed + 1] = admittedKey
        end
      end
    end
  elseif ended == 'c' then
    local a = bucket(admittedKey)
    if a.i > 0 then
      a.i = a.i - 1
      change(admittedKey, a)
    end
    -- A request that never left gives its place back within the window it was counted in (endInFlight).
    if unsent == '1' and tonumber(window) == a.w and a.l ~= nil and a.exists then
      a.r = math.min(a.l, a.r + 1)
      change(admittedKey, a)
    end
  end

  if subMs ~= '' then
    local ms = math.ceil(tonumber(subMs))
    if ms > 0 and ms > redis.call('PTTL', subKey) then
      redis.call('SET', subKey, '1', 'PX', ms)
      if ms > redis.call('PTTL', subsKey) then redis.call('SET', subsKey, '1', 'PX', ms) end
    end
  end

  if targetKind == '' then return end
  local s = bucket(targetKey)
  if not s.exists and hash == '' then return end

  -- learnBucket: never raises `remaining` above what we counted ourselves, never moves a known end earlier.
  if blockMs then s.b = math.max(s.b, now + blockMs) end
  local limit, remaining, resetAfter = tonumber(limitArg), tonumber(remainingArg), tonumber(resetArg)
  if limit and remaining and resetAfter then
    local reset = now + resetAfter + marginMs
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
  change(targetKey, s)
end

-- One answer's fields, split on "\n".
local function fields(packed)
  local f, from = {}, 1
  for n = 1, 17 do
    local at = string.find(packed, '\n', from, true)
    if not at then
      f[n] = string.sub(packed, from)
      return f
    end
    f[n] = string.sub(packed, from, at - 1)
    from = at + 1
  end
  return f
end

-- Every answer is read before any is applied: a malformed one fails the call before it changed anything.
local answers = {}
for i = 6, #ARGV do
  local f = fields(ARGV[i])
  if #f ~= 17 then return redis.error_reply('learn: an answer must have 17 fields') end
  answers[#answers + 1] = f
end

local base = ARGV[5]
for _, f in ipairs(answers) do
  local routeKey, major, admitted, tag, hash = f[1], f[2], f[3], f[4], f[6]
  local admittedKey = base .. 'bucket:' .. admitted
  local targetKey = admittedKey
  if hash ~= '' then targetKey = base .. 'bucket:' .. hash .. '|' .. major end
  local subKey = nil
  if f[9] ~= '' then subKey = base .. 'sub:' .. routeKey .. '|' .. major .. '|' .. tag end
  learn(base .. 'route:' .. routeKey, admittedKey, targetKey, subKey, f[5], hash, f[7], f[8], f[9], f[10], f[11],
    f[12], f[13], f[14], f[15], f[16], f[17])
end

-- At most REDIS_BATCH_MAX (1000) answers: well within what unpack can pass.
if #redated > 0 then redis.call('ZADD', gslotsKey, 'XX', unpack(redated)) end
if #unsentSlots > 0 then redis.call('ZREM', gslotsKey, unpack(unsentSlots)) end
for key, mapping in pairs(routes) do
  redis.call('SET', key, mapping[1], 'PX', mapping[2])
end
for _, key in ipairs(changed) do
  local s = buckets[key]
  if s.deleted then redis.call('DEL', key) end
  if s.exists then
    local fields = {'r', s.r, 't', s.t, 'f', s.f and 1 or 0, 'b', s.b, 'p', s.p, 'w', s.w, 'i', s.i, 'u', s.u}
    if s.l ~= nil then
      fields[#fields + 1] = 'l'
      fields[#fields + 1] = s.l
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('PEXPIRE', key, math.ceil(math.max(s.t, s.b, s.p, s.u, now) - now + idleMs))
  end
end
return 1
