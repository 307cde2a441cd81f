-- A message's check-back over the Redis barrier (upstream's RedisQueryPrepared).
-- KEYS[1] the barrier key of the message's local op (gid-00-msg-01); ARGV[1] its expiry in
-- seconds. Sets the key to 'rollback' unless the local op set it first, so a late local op
-- finds it taken; returns 'FAILURE' when the key says 'rollback', nil when the op committed.

local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], 'rollback', 'EX', ARGV[1])
  v = 'rollback'
end
if v == 'rollback' then
  return 'FAILURE'
end
return nil
