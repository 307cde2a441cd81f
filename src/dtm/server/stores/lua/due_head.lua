-- due_head: the earliest due entries of a due index, to share a lock_due call among
-- buckets (read only).
-- KEYS: unfinished index
-- ARGV: limit
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', digits(now_us()), 'WITHSCORES',
  'LIMIT', 0, ARGV[1])
