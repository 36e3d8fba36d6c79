"""The Lua scripts behind the shared breaker (``breaker_redis.py``).

Each runs atomically on Redis' own clock, so replicas with skewed clocks agree on the
instant, and PUBLISHes the state it leaves (``cjson`` is built into Redis' Lua).
"""

# The state a script returns and publishes, as JSON (cjson is built into Redis' Lua).
STATE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(field)
  return tonumber(redis.call('HGET', KEYS[1], field) or '0') or 0
end
local function done(now)
  local msg = cjson.encode({
    id = ARGV[1], ['until'] = num('until'), opened = num('opened'), failures = num('failures'),
    epoch = num('epoch'), error = redis.call('HGET', KEYS[1], 'error') or '', now = now})
  redis.call('PUBLISH', ARGV[2], msg)
  return msg
end
local function extend(now, wait_ms, opened)
  local new = now + wait_ms
  if new > num('until') then redis.call('HSET', KEYS[1], 'until', string.format('%.0f', new)) end
  if opened > num('opened') then redis.call('HSET', KEYS[1], 'opened', opened) end
  redis.call('HSET', KEYS[1], 'failures', 0)
  redis.call('DEL', KEYS[2])
end
"""

# KEYS: state hash, probe lock. ARGV: id, channel, wait_ms, opened, error class.
TRIP = (
    STATE
    + """
local now = now_ms()
redis.call('HSET', KEYS[1], 'error', ARGV[5])
extend(now, tonumber(ARGV[3]), tonumber(ARGV[4]))
return done(now)
"""
)

# A failure below the local threshold: counted across replicas; the shared count trips too.
# ARGV: id, channel, error class, threshold, cooldown_ms, max_cooldown_ms.
FAIL = (
    STATE
    + """
local now = now_ms()
redis.call('HSET', KEYS[1], 'error', ARGV[3])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[4]) and num('until') <= now then
  local opened = num('opened') + 1
  local wait = math.min(tonumber(ARGV[5]) * 2 ^ math.min(opened - 1, 20), tonumber(ARGV[6]))
  extend(now, wait, opened)
end
return done(now)
"""
)

# A success: clears a cooldown that has ended (a new epoch re-admits everywhere); a cooldown
# still running (another replica's, or a newer one) is left alone. ARGV: id, channel.
RECOVER = (
    STATE
    + """
local now = now_ms()
local u = num('until')
if u > now then return done(now) end
redis.call('HSET', KEYS[1], 'failures', 0)
if u > 0 then
  redis.call('HSET', KEYS[1], 'until', 0, 'opened', 0)
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
redis.call('DEL', KEYS[2])
return done(now)
"""
)

READ = (
    STATE
    + """
local now = now_ms()
return cjson.encode({id = ARGV[1], ['until'] = num('until'), opened = num('opened'),
  failures = num('failures'), epoch = num('epoch'),
  error = redis.call('HGET', KEYS[1], 'error') or '', now = now})
"""
)
