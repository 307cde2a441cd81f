-- kv_delete: remove a pair and its index entries.
-- KEYS: category hash, category index, categories set
-- ARGV: category, key
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return 1
