-- purge_finished: remove finished transactions last updated before now - older_than, and
-- their index entries; the records may have expired already (their TTL), the entries not.
-- KEYS: finished index, all index
-- ARGV: key prefix, older_than (us), limit
local now = now_us()
local gids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf',
  '(' .. digits(now - tonumber(ARGV[2])), 'LIMIT', 0, ARGV[3])
for _, gid in ipairs(gids) do
  local key = ARGV[1] .. '_g_' .. gid
  local raw = redis.call('GET', key)
  if not raw or FINISHED[cjson.decode(raw).status] then
    redis.call('DEL', key, ARGV[1] .. '_b_' .. gid)
    redis.call('ZREM', KEYS[2], gid)
  end
  redis.call('ZREM', KEYS[1], gid)
end
return #gids
