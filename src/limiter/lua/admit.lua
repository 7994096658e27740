--[[
  Decides whether requests may go now, and takes their slots if so: identity pause, marks, sublimit, bucket, global
  window, in that order, exactly as MemoryStore.admitNow does (bucket-rules.ts checkBucket / takeBucket), for each
  request of one identity in turn. Requests that arrive together go to Redis as one call (redis.ts batches them
  per identity), so a hot token costs one script run per batch instead of one per request. The Cloudflare pause is
  checked in process before this script runs (see redis.ts).

  Input (numkeys = 4 + 2 x n for n requests; every key carries the identity's hash tag, so one slot):
    KEYS[1]  identity pause      STRING, PTTL = remaining pause
    KEYS[2]  global window       ZSET: the identity's admissions that still count, slot id -> when they stop
                                 counting (ms): a window past their answer; while in flight, a timeout past it
    KEYS[3]  known-bad marks     HASH: field -> "<expiry ms, Redis time>:<Discord's code>" (see mark-1.lua):
                                 "r" the token is revoked, "u:<routeKey>" the route needs a token, "g:<major>"
                                 the webhook is gone, "c:<major>" the channel or guild is closed to the token,
                                 "f:<routeKey>|<major>|<target>" this exact target is forbidden
    KEYS[4]  any sublimit        STRING, PTTL = the longest sublimit delay of the identity (learn.lua keeps it):
                                 while it is absent no request's own sublimit key needs reading
    then for each request i (from 0):
    KEYS[5 + 2i]  sublimit       STRING, PTTL = remaining delay for this route, major parameter and tag
    KEYS[6 + 2i]  route -> hash  STRING: the bucket hash, "" for a route Discord does not bucket, "!" for one
                                 limited without rate-limit headers (admitted as an unknown bucket)

    ARGV[1]  bucket key base     e.g. "drlp:{identity}:bucket:"; the bucket key is this plus
                                 "<hash or unk:routeKey>|<major>". It depends on the route's hash, so it cannot be
                                 declared, but it carries the same {identity} hash tag and lives in the same slot.
    ARGV[2]  global window length, ms (1000 + margin)
    ARGV[3]  in-flight timeout, ms: how long an unanswered probe, bucket slot or global slot keeps counting
    ARGV[4]  idle lifetime of a bucket after its last reset/block/probe, ms
    ARGV[5]  PROBE_POLL_MS
    ARGV[6]  STALLED_WINDOW_MS
    then for each request i:
    ARGV[7 + 6i]   routeKey
    ARGV[8 + 6i]   major
    ARGV[9 + 6i]   global limit (requests per window; 0 = exempt)
    ARGV[10 + 6i]  target: the ids of the path past its major parameter
    ARGV[11 + 6i]  places: how many places more in this request's bucket to grant for the replica's lease of its
                   queue (leases.ts), each counted in flight exactly like this request's own
    ARGV[12 + 6i]  slots: how many global slots more to grant for the replica's lease of the identity's window

  Output: one reply per request, in order:
    {1, bucketSuffix, probe, window, slot[, places, extraSlot...]}
                              admitted; bucketSuffix is "<hash or unk:routeKey>|<major>" or "" (not bucketed),
                              probe is 1 when this request finds out an unknown bucket's limits, window the
                              bucket's local window it was counted in, slot its global slot id ("" if exempt);
                              when more was asked for: how many places more were granted in the same bucket and
                              window (for a route that is not bucketed, as many as asked: they count nothing),
                              then the global slot ids granted (at most `slots`, none for exempt traffic)
    {0, reason, waitMs}       wait; reason: 1 bucket, 2 probe, 3 blocked, 4 sublimit, 5 global, 6 paused,
                              7 revoked, 8 gone, 9 forbidden (known to fail: answered at once until waitMs,
                              and a fourth element, the code of Discord's answer that set the mark);
                              waitMs rounded up so nobody is woken early

  Cost: a run reads what its requests share once (pause, marks, sublimits, the global window, each route's hash,
  each bucket) and writes each bucket it changed and the new global slots once at its end, so a batch of requests
  on few buckets costs a few commands per bucket, not eight per request.
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local pauseKey, gslotsKey, badKey, subsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, windowMs, timeout, idleMs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local probePoll, stalledMs = tonumber(ARGV[5]), tonumber(ARGV[6])

-- What is the same for every request of the run (one identity, one `now`) is read once, when first needed.
local anyMarks = nil
local anySublimit = nil
local pausedMs = nil
local globalCount = nil
local slotPrefix = nil
local slotsUntil = nil
local newSlots = {} -- score, member, ... for one ZADD at the end
local routes = {} -- route key name -> its hash (false when absent)
local buckets = {} -- bucket key -> state, read once, changed in place
local changed = {} -- bucket keys to write back at the end, in order

local function bucket(key)
  local s = buckets[key]
  if s then return s end
  local f = redis.call('HMGET', key, 'l', 'r', 't', 'f', 'b', 'p', 'w', 'i', 'u')
  s = {
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

-- One more slot in the identity's global window, counted until its answer (or its in-flight timeout).
local function takeSlot()
  -- Unique within this run by its count (every admission of one run has the same `now`); the prefix check covers
  -- a run of another replica in the same microsecond.
  if slotPrefix == nil then
    slotPrefix = string.format('%.3f', now)
    while redis.call('ZSCORE', gslotsKey, slotPrefix .. '.1') do slotPrefix = slotPrefix .. '+' end
    slotsUntil = now + timeout + windowMs
  end
  globalCount = globalCount + 1
  local slot = slotPrefix .. '.' .. (#newSlots / 2 + 1)
  newSlots[#newSlots + 1] = slotsUntil
  newSlots[#newSlots + 1] = slot
  return slot
end

local leases = {} -- {reply, places, slots, bucket state, bucket key, global limit} of admitted requests that want more

local function admit(subKey, routeKeyName, routeKey, major, globalLimitArg, target, placesArg, slotsArg)
  local globalLimit = tonumber(globalLimitArg)

  -- In the order of MARK_SCOPES (types.ts), each with its wait reason.
  if anyMarks == nil then anyMarks = redis.call('EXISTS', badKey) == 1 end
  if anyMarks then
    local marks = redis.call('HMGET', badKey, 'r', 'u:' .. routeKey, 'g:' .. major, 'c:' .. major,
      'f:' .. routeKey .. '|' .. major .. '|' .. target)
    local markReasons = {7, 7, 8, 9, 9}
    for i = 1, 5 do
      if marks[i] then
        local expires, code = string.match(marks[i], '^([^:]+):(%d+)$')
        expires = tonumber(expires)
        if expires and expires > now then return {0, markReasons[i], math.ceil(expires - now), tonumber(code)} end
      end
    end
  end

  if globalLimit > 0 then
    if pausedMs == nil then pausedMs = redis.call('PTTL', pauseKey) end
    if pausedMs > 0 then return {0, 6, pausedMs} end
  end
  if anySublimit == nil then anySublimit = redis.call('PTTL', subsKey) > 0 end
  if anySublimit then
    local sublimited = redis.call('PTTL', subKey)
    if sublimited > 0 then return {0, 4, sublimited} end
  end

  local hash = routes[routeKeyName]
  if hash == nil then
    hash = redis.call('GET', routeKeyName)
    routes[routeKeyName] = hash
  end
  local suffix = ''
  local bucketKey = nil
  local s = nil
  local inflight = 0
  local over = false
  if hash ~= '' then
    if not hash or hash == '!' then hash = 'unk:' .. routeKey end
    suffix = hash .. '|' .. major
    bucketKey = base .. suffix
    s = bucket(bucketKey)
    if now < s.u then inflight = s.i end

    -- checkBucket
    if s.b > now then return {0, 3, math.ceil(s.b - now)} end
    if s.l == nil then
      if s.p > now then return {0, 2, math.ceil(math.min(probePoll, s.p - now))} end
      -- The hash is known (another major parameter taught it) but this bucket has no state yet: if this major
      -- parameter's probe from before the hash was known is still out, it answers first (memory.ts probeBeforeHash).
      if string.sub(hash, 1, 4) ~= 'unk:' then
        local early = bucket(base .. 'unk:' .. routeKey .. '|' .. major).p
        if early > now then return {0, 2, math.ceil(math.min(probePoll, early - now))} end
      end
    else
      if s.f then
        over = s.r <= 0 and inflight == 0 and now >= s.t + stalledMs
      else
        over = now >= s.t
      end
      local left = s.r
      if over then left = s.l - inflight end
      if left <= 0 then
        if not s.f and not over then return {0, 1, math.ceil(s.t - now)} end
        -- Waiting for answers of the new window, or of the old one still in flight (bucket-rules.ts checkBucket).
        local stalledAt = s.u
        if s.f and inflight == 0 then stalledAt = s.t + stalledMs end
        return {0, 1, math.max(1, math.ceil(math.min(probePoll, stalledAt - now)))}
      end
    end
  end

  local slot = ''
  if globalLimit > 0 then
    if globalCount == nil then
      redis.call('ZREMRANGEBYSCORE', gslotsKey, '-inf', now)
      globalCount = redis.call('ZCARD', gslotsKey)
    end
    if globalCount >= globalLimit then
      -- Still in flight, the soonest slot's end is unknown but at least a window away (memory.ts globalWait). Slots
      -- taken in this run are not written yet; they end last, so they are the soonest only when alone.
      local soonest = tonumber(redis.call('ZRANGE', gslotsKey, 0, 0, 'WITHSCORES')[2]) or slotsUntil
      return {0, 5, math.ceil(math.min(soonest - now, windowMs))}
    end
    slot = takeSlot()
  end

  -- Commit the bucket only now: a request turned away by the global window must not use a bucket slot.
  local probe = 0
  local window = 0
  if bucketKey then
    -- takeBucket
    if s.l == nil then
      s.p = now + timeout
      probe = 1
    else
      if over then
        s.w, s.f, s.t, s.r = s.w + 1, true, now, s.l - inflight
      end
      s.r = s.r - 1
      s.i, s.u = inflight + 1, now + timeout
    end
    window = s.w
    if not s.changed then
      s.changed = true
      changed[#changed + 1] = bucketKey
    end
  end
  local reply = {1, suffix, probe, window, slot}
  local places, slots = tonumber(placesArg) or 0, tonumber(slotsArg) or 0
  if places + slots > 0 then
    reply[6] = 0
    if probe == 0 then leases[#leases + 1] = {reply, places, slots, s, bucketKey, globalLimit} end
  end
  return reply
end

-- A lease: more places in an admitted request's bucket and more global slots of its identity, for the replica to
-- spend without asking (leases.ts). Granted after every request of the run is decided, so a lease never takes a
-- place from a request that came with it; only while nothing holds the identity back (no mark, no sublimit; a
-- paused identity admitted nothing), never for an unknown bucket, and only while they leave at least half of the
-- bucket's remaining and of the global window to everyone else.
local function lease(reply, places, slots, s, bucketKey, globalLimit)
  local granted = 0
  while granted < places and not (bucketKey and s.r - 1 < s.l / 2) do
    if bucketKey then s.r, s.i = s.r - 1, s.i + 1 end
    granted = granted + 1
  end
  reply[6] = granted
  if globalLimit == 0 then return end
  for _ = 1, slots do
    if globalCount + 1 > globalLimit / 2 then return end
    reply[#reply + 1] = takeSlot()
  end
end

local replies = {}
for i = 0, (#KEYS - 4) / 2 - 1 do
  local a = 7 + 6 * i
  replies[i + 1] = admit(KEYS[5 + 2 * i], KEYS[6 + 2 * i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5])
end
if anyMarks == false and anySublimit == false then
  for _, l in ipairs(leases) do lease(l[1], l[2], l[3], l[4], l[5], l[6]) end
end

for _, key in ipairs(changed) do
  local s = buckets[key]
  local fields = {'r', s.r, 't', s.t, 'f', s.f and 1 or 0, 'b', s.b, 'p', s.p, 'w', s.w, 'i', s.i, 'u', s.u}
  if s.l ~= nil then
    fields[#fields + 1] = 'l'
    fields[#fields + 1] = s.l
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, math.ceil(math.max(s.t, s.b, s.p, s.u, now) - now + idleMs))
end
if #newSlots > 0 then
  -- In chunks: with leases a run may take thousands of slots, more than unpack can pass at once.
  for first = 1, #newSlots, 2000 do
    redis.call('ZADD', gslotsKey, unpack(newSlots, first, math.min(first + 1999, #newSlots)))
  end
  redis.call('PEXPIRE', gslotsKey, math.ceil(slotsUntil - now))
end
return replies
