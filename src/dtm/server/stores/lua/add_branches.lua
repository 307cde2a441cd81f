-- add_branches: more operations for a transaction in the expected status.
-- KEYS: global, branches, counters
-- ARGV: expected status, id stride, id offset, then (field, branch JSON) pairs
local raw = redis.call('GET', KEYS[1])
if not raw or cjson.decode(raw).status ~= ARGV[1] then
  return false
end
local now = now_us()
local ids = add_branch_ops(KEYS[2], KEYS[3], 4, iso(now), tonumber(ARGV[2]), tonumber(ARGV[3]))
-- Operations added to a finished transaction expire with it.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
table.insert(ids, 1, now)
return ids
