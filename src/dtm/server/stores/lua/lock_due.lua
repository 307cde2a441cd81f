-- lock_due: take due unfinished transactions, oldest due first, each leased to one owner.
-- KEYS: unfinished index
-- ARGV: key prefix, owner, lease (us), limit
local now = now_us()
local gids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', digits(now), 'LIMIT', 0, ARGV[4])
local till = now + tonumber(ARGV[3])
local score, stamp, till_stamp = digits(till), iso(now), iso(till)
local taken = {}
for _, gid in ipairs(gids) do
  local key = ARGV[1] .. '_g_' .. gid
  local raw = redis.call('GET', key)
  local g = raw and cjson.decode(raw)
  if g and not FINISHED[g.status] then
    g.owner = ARGV[2]
    g.next_cron_time = till_stamp
    g.update_time = stamp
    raw = cjson.encode(g)
    redis.call('SET', key, raw, 'KEEPTTL')
    redis.call('ZADD', KEYS[1], score, gid)
    taken[#taken + 1] = raw
  else
    -- Never written so: the index holds unfinished transactions only. Heal it anyway.
    redis.call('ZREM', KEYS[1], gid)
  end
end
return taken
