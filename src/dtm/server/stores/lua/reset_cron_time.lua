-- reset_cron_time: make unfinished transactions due later than now + after due now.
-- KEYS: unfinished index
-- ARGV: key prefix, after (us), limit
local now = now_us()
local gids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. digits(now + tonumber(ARGV[2])),
  '+inf', 'LIMIT', 0, ARGV[3])
local stamp = iso(now)
for _, gid in ipairs(gids) do
  if not set_due(ARGV[1], KEYS[1], gid, now, stamp) then
    redis.call('ZREM', KEYS[1], gid)
  end
end
return #gids
