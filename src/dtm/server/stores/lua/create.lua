-- create: a new transaction, its branch operations and its index entries, or nothing.
-- KEYS: global, branches, unfinished index, all index, finished index, counters
-- ARGV: gid, due delay (us), '1' when created finished, finished TTL (s), global JSON,
--       branch id stride, branch id offset, id ('' = the next of the counters), then
--       (field, branch JSON) pairs
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local gid = ARGV[1]
local now = now_us()
local stamp = iso(now)
local due = now + tonumber(ARGV[2])
local stride, offset = tonumber(ARGV[6]), tonumber(ARGV[7])
local id = tonumber(ARGV[8]) or redis.call('HINCRBY', KEYS[6], 'g', 1)
redis.call('SET', KEYS[1], '{"id":' .. digits(id) .. ',"create_time":"' .. stamp ..
  '","update_time":"' .. stamp .. '","next_cron_time":"' .. iso(due) .. '",' ..
  string.sub(ARGV[5], 2))
-- Branches of an earlier transaction with this gid expire with its global record; a
-- leftover must not join the new one.
redis.call('DEL', KEYS[2])
local ids = add_branch_ops(KEYS[2], KEYS[6], 9, stamp, stride, offset)
redis.call('ZADD', KEYS[4], digits(id), gid)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[5], digits(now), gid)
  expire_finished(KEYS[1], KEYS[2], ARGV[4])
else
  redis.call('ZREM', KEYS[5], gid)
  redis.call('ZADD', KEYS[3], digits(due), gid)
end
table.insert(ids, 1, now)
table.insert(ids, 1, id)
return ids
