-- kv_scan: pairs of one category newest first (by id) below a position.
-- KEYS: category hash, category index
-- ARGV: position ('' = newest), limit
local top = ARGV[1] == '' and '+inf' or '(' .. ARGV[1]
local keys = redis.call('ZREVRANGEBYSCORE', KEYS[2], top, '-inf', 'LIMIT', 0, ARGV[2])
local found = {}
for _, key in ipairs(keys) do
  found[#found + 1] = redis.call('HGET', KEYS[1], key)
end
return found
