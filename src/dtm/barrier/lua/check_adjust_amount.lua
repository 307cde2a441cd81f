-- The Redis barrier of one branch op, atomically with a balance change (upstream's
-- RedisCheckAdjustAmount, client/dtmcli/barrier_redis.go).
-- KEYS[1] the balance, KEYS[2] this op's barrier key, KEYS[3] the barrier key of the op a
-- compensation undoes (unused when ARGV[2] is '').
-- ARGV[1] the amount to add, ARGV[2] that undone op or '', ARGV[3] barrier key expiry in
-- seconds, ARGV[4] this op (stored as the value of its barrier key).
-- Returns 'DUPLICATE' (repeat, or an action after its compensation: skipped), 'NULL' (a
-- compensation whose op never ran: recorded, skipped), 'FAILURE' (no balance key, or the
-- balance would go below 0: nothing written) or nil (applied).
--
-- Unlike upstream the barrier checks come before the balance check: a repeat of an op that
-- already succeeded answers DUPLICATE rather than FAILURE once the balance has moved, and a
-- null compensation never fails. A refused op still leaves no barrier key, as upstream.

if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'DUPLICATE'
end

if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
  -- Blocks the undone op if it arrives later (hanging): it will find its key taken.
  redis.call('SET', KEYS[3], 'rollback', 'EX', ARGV[3])
  return 'NULL'
end

local balance = redis.call('GET', KEYS[1])
if balance == false or tonumber(balance) + tonumber(ARGV[1]) < 0 then
  return 'FAILURE'
end

redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
redis.call('INCRBY', KEYS[1], ARGV[1])
return nil
