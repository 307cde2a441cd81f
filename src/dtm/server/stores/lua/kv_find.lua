-- kv_find: pairs of one category ('' = every category) and one key ('' = every key).
-- KEYS: categories set
-- ARGV: key prefix, category, key
local cats = ARGV[2] ~= '' and { ARGV[2] } or redis.call('SMEMBERS', KEYS[1])
local found = {}
for _, cat in ipairs(cats) do
  local hash = ARGV[1] .. '_kv_' .. cat
  if ARGV[3] ~= '' then
    local raw = redis.call('HGET', hash, ARGV[3])
    if raw then
      found[#found + 1] = raw
    end
  else
    for _, raw in ipairs(redis.call('HVALS', hash)) do
      found[#found + 1] = raw
    end
  end
end
return found
