-- kv_update: new value and version + 1 when the stored version is the expected one.
-- KEYS: category hash
-- ARGV: key, value, expected version
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local kv = cjson.decode(raw)
if kv.version ~= tonumber(ARGV[3]) then
  return 0
end
kv.v = ARGV[2]
kv.version = kv.version + 1
kv.update_time = iso(now_us())
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(kv))
return 1
