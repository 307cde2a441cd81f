-- load: a transaction and its branch operations in one read.
-- KEYS: global, branches
local raw = redis.call('GET', KEYS[1])
if not raw then
  return {}
end
return { raw, redis.call('HVALS', KEYS[2]) }
