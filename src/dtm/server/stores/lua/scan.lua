-- scan: transactions newest first (by id) below a position, with optional filters.
-- Examines at most `budget` index entries, so a rare filter cannot stall Redis: the page
-- may then hold fewer than `limit` items, and its position tells where to go on.
-- KEYS: all index
-- ARGV: key prefix, position ('' = newest), limit, budget, status, trans_type,
--       create_time from, create_time to (RFC 3339 as stored; '' = no filter)
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local status, trans_type, from, to = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local filtered = status ~= '' or trans_type ~= '' or from ~= '' or to ~= ''
local top = ARGV[2] == '' and '+inf' or '(' .. ARGV[2]
local items = {}
local examined = 0
while true do
  local chunk = math.min(math.max(limit - #items, 16), budget - examined)
  local entries = redis.call('ZREVRANGEBYSCORE', KEYS[1], top, '-inf', 'WITHSCORES',
    'LIMIT', 0, chunk)
  if #entries == 0 then
    return { items, '' }
  end
  for i = 1, #entries, 2 do
    local score = entries[i + 1]
    examined = examined + 1
    local raw = redis.call('GET', ARGV[1] .. '_g_' .. entries[i])
    local keep = raw ~= false
    if keep and filtered then
      local g = cjson.decode(raw)
      keep = (status == '' or g.status == status)
        and (trans_type == '' or g.trans_type == trans_type)
        and (from == '' or g.create_time >= from)
        and (to == '' or g.create_time <= to)
    end
    if keep then
      items[#items + 1] = raw
      if #items == limit then
        return { items, score }
      end
    end
    if examined >= budget then
      return { items, score }
    end
  end
  top = '(' .. entries[#entries]
end
