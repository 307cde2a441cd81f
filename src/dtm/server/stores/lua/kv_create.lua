-- kv_create: a new pair with version 1, or nothing when the key exists in the category.
-- KEYS: category hash, category index, categories set, counters
-- ARGV: category, key, value
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  return 0
end
local stamp = iso(now_us())
local id = redis.call('HINCRBY', KEYS[4], 'kv', 1)
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode({
  id = id, cat = ARGV[1], k = ARGV[2], v = ARGV[3], version = 1,
  create_time = stamp, update_time = stamp,
}))
redis.call('ZADD', KEYS[2], id, ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
