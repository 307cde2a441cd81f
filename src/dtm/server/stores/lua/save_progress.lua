-- save_progress: branch updates and global changes of a transaction in the expected status
-- (and, when guarded, with the expected owner), or nothing.
-- KEYS: global, branches, unfinished index, finished index
-- ARGV: gid, expected status, '1' when owner-guarded, owner, changes JSON ('' = none),
--       next cron delay in us ('' = none), finished TTL (s), then (field, status) pairs
local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
local g = cjson.decode(raw)
if g.status ~= ARGV[2] or (ARGV[3] == '1' and (g.owner or '') ~= ARGV[4]) then
  return 0
end
local gid = ARGV[1]
local now = now_us()
local stamp = iso(now)
for i = 8, #ARGV, 2 do
  local braw = redis.call('HGET', KEYS[2], ARGV[i])
  if braw then
    local b = cjson.decode(braw)
    b.status = ARGV[i + 1]
    b.update_time = stamp
    if FINISHED[b.status] then
      b.finish_time = stamp
    end
    redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(b))
  end
end
if ARGV[5] == '' and ARGV[6] == '' then
  return 1
end
local was_finished = FINISHED[g.status]
if ARGV[5] ~= '' then
  local changes = cjson.decode(ARGV[5])
  for name, value in pairs(changes) do
    g[name] = value
  end
  if changes.status == 'succeed' then
    g.finish_time = stamp
  elseif changes.status == 'failed' then
    g.rollback_time = stamp
  end
end
local due = nil
if ARGV[6] ~= '' then
  due = now + tonumber(ARGV[6])
  g.next_cron_time = iso(due)
end
g.update_time = stamp
redis.call('SET', KEYS[1], cjson.encode(g), 'KEEPTTL')
if FINISHED[g.status] then
  -- Scored by the last update: purge_finished removes those updated long enough ago.
  redis.call('ZREM', KEYS[3], gid)
  redis.call('ZADD', KEYS[4], digits(now), gid)
  expire_finished(KEYS[1], KEYS[2], ARGV[7])
elseif was_finished then
  -- Back to unfinished (no engine does this): kept for good, and due.
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('ZREM', KEYS[4], gid)
  redis.call('ZADD', KEYS[3], digits(due or now), gid)
elseif due then
  redis.call('ZADD', KEYS[3], digits(due), gid)
end
return 1
