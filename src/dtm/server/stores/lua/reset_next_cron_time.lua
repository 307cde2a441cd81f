-- reset_next_cron_time: make one unfinished transaction due now.
-- KEYS: unfinished index
-- ARGV: key prefix, gid
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return 0
end
local now = now_us()
return set_due(ARGV[1], KEYS[1], ARGV[2], now, iso(now)) and 1 or 0
