-- Prepended to every script of the Redis store: the store's clock, how times are written,
-- and the pieces several scripts share. Times are microseconds since the epoch from
-- Redis's own clock (TIME is allowed in scripts: Redis >= 5 replicates a script's effects).

local FINISHED = { succeed = true, failed = true }
local floor = math.floor

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A whole number as digits (a score or an argument): Lua's own number formatting turns
-- to exponents past 14 digits, and microsecond times have 16.
local function digits(n)
  return string.format('%.0f', n)
end

-- RFC 3339 UTC text with microseconds, always the same width, so that text order is time
-- order (scan compares create_time bounds as text). The date is H. Hinnant's
-- civil-from-days; Redis's Lua has no os.date.
local function iso(us)
  local secs = floor(us / 1000000)
  local frac = us - secs * 1000000
  if frac < 0 then
    secs, frac = secs - 1, frac + 1000000
  elseif frac >= 1000000 then
    secs, frac = secs + 1, frac - 1000000
  end
  local days = floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor(
    (doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local day = doy - floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day,
    floor(rem / 3600), floor(rem % 3600 / 60), rem % 60, frac)
end

-- Stores branch operations given as (field, JSON) pairs in ARGV from `first` on, into the
-- hash `key`; fields present already are left alone. The JSON comes without id and times
-- (the caller encodes it so), and they are put in front of its other members here.
-- Ids are the counter's value times `stride` plus `offset` (the bucket's stripe: unique
-- over buckets; 1 and 0 with one bucket). Returns the new ids in order, 0 for each operation left alone.
local function add_branch_ops(key, counters, first, stamp, stride, offset)
  local ids = {}
  for i = first, #ARGV, 2 do
    local id = 0
    if redis.call('HEXISTS', key, ARGV[i]) == 0 then
      id = redis.call('HINCRBY', counters, 'b', 1) * stride + offset
      redis.call('HSET', key, ARGV[i], '{"id":' .. digits(id) .. ',"create_time":"' .. stamp ..
        '","update_time":"' .. stamp .. '",' .. string.sub(ARGV[i + 1], 2))
    end
    ids[#ids + 1] = id
  end
  return ids
end

-- A finished transaction's records live `ttl` more seconds (none when ttl <= 0).
local function expire_finished(global_key, branches_key, ttl)
  if tonumber(ttl) > 0 then
    redis.call('EXPIRE', global_key, ttl)
    redis.call('EXPIRE', branches_key, ttl)
  end
end

-- Sets next_cron_time (and update_time) of the unfinished transaction `gid` and moves it
-- in the index of due times; false when there is no unfinished record.
local function set_due(prefix, index, gid, due, stamp)
  local key = prefix .. '_g_' .. gid
  local raw = redis.call('GET', key)
  if not raw then
    return false
  end
  local g = cjson.decode(raw)
  if FINISHED[g.status] then
    return false
  end
  g.next_cron_time = iso(due)
  g.update_time = stamp
  redis.call('SET', key, cjson.encode(g), 'KEEPTTL')
  redis.call('ZADD', index, digits(due), gid)
  return true
end

