"""The Lua scripts that make every Redis write one atomic step.

A script runs with no other command in between, so append + dedupe + trim + version bump +
TTL refresh cannot interleave with another replica's append (no read-modify-write race), and
a retried script finds its message ids already in the `ids` set and adds nothing twice.
Every script touches only the keys of one session, which share a Redis Cluster hash tag.

KEYS of every script, in this order: meta (hash), msgs (list), ids (set), facts (hash).
"""

from __future__ import annotations

# Sets the TTL of all four keys (0: persist). Run last, after every key a script may create exists.
_TOUCH = """
local function touch(ttl)
  for _, k in ipairs(KEYS) do
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end
  end
end
"""

# ARGV: now_ms, ttl_ms, max_messages, expected_version ('' for none), user, model,
# labels_json ('' for none), then id1, blob1, id2, blob2, ...
# Returns {'ok', version, appended, duplicates, trimmed, message_count} or {'conflict', version}.
APPEND = (
    _TOUCH
    + """
local meta, msgs, ids = KEYS[1], KEYS[2], KEYS[3]
local now, ttl, max_messages = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local version = tonumber(redis.call('HGET', meta, 'version') or '0')
local total = (#ARGV - 7) / 2
local fresh = {}
for i = 8, #ARGV, 2 do
  if redis.call('SISMEMBER', ids, ARGV[i]) == 0 then fresh[#fresh + 1] = i end
end
if #fresh == 0 then
  -- A retry of an applied append: change nothing but the TTL of a session that exists.
  local count = redis.call('LLEN', msgs)
  if redis.call('EXISTS', meta) == 1 then touch(ttl) end
  return {'ok', version, 0, total, 0, count}
end
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= version then
  return {'conflict', version}
end
for _, i in ipairs(fresh) do
  redis.call('SADD', ids, ARGV[i])
  redis.call('RPUSH', msgs, ARGV[i + 1])
end
version = version + 1
redis.call('HSETNX', meta, 'created_ms', now)
redis.call('HSET', meta, 'version', version, 'updated_ms', now)
if ARGV[5] ~= '' then redis.call('HSET', meta, 'user', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', meta, 'model', ARGV[6]) end
if ARGV[7] ~= '' then
  local current = redis.call('HGET', meta, 'labels')
  local labels = current and cjson.decode(current) or {}
  for name, value in pairs(cjson.decode(ARGV[7])) do labels[name] = value end
  redis.call('HSET', meta, 'labels', cjson.encode(labels))
end
local count = redis.call('LLEN', msgs)
local trimmed = 0
if count > max_messages then
  trimmed = count - max_messages
  redis.call('LTRIM', msgs, trimmed, -1)
  count = max_messages
end
touch(ttl)
return {'ok', version, #fresh, total - #fresh, trimmed, count}
"""
)

# ARGV: ttl_ms, touch ('1' or '0'). Returns nil for no session, else {meta, msgs, facts} (flat pairs).
READ = (
    _TOUCH
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local result = {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1), redis.call('HGETALL', KEYS[4])}
if ARGV[2] == '1' then touch(tonumber(ARGV[1])) end
return result
"""
)

# ARGV: now_ms, ttl_ms, max_facts, n_set, then name1, value1, ... (n_set pairs), then names to remove.
# Returns {'ok', facts (flat pairs)} or {'too_many', count} (then nothing, not even the session, is created).
FACTS = (
    _TOUCH
    + """
local meta, facts = KEYS[1], KEYS[4]
local n_set = tonumber(ARGV[4])
local first_remove = 5 + 2 * n_set
local exists = redis.call('EXISTS', meta) == 1
if not exists and n_set == 0 then return {'ok', {}} end
local count = redis.call('HLEN', facts)
for i = 5, first_remove - 1, 2 do
  if redis.call('HEXISTS', facts, ARGV[i]) == 0 then count = count + 1 end
end
for i = first_remove, #ARGV do
  if redis.call('HEXISTS', facts, ARGV[i]) == 1 then count = count - 1 end
end
if count > tonumber(ARGV[3]) then return {'too_many', count} end
if not exists then
  -- Facts may be learnt before the first message is stored: setting some creates the session.
  redis.call('HSET', meta, 'created_ms', ARGV[1], 'version', 0)
end
for i = 5, first_remove - 1, 2 do redis.call('HSET', facts, ARGV[i], ARGV[i + 1]) end
for i = first_remove, #ARGV do redis.call('HDEL', facts, ARGV[i]) end
if #ARGV >= 5 then
  redis.call('HINCRBY', meta, 'version', 1)
  redis.call('HSET', meta, 'updated_ms', ARGV[1])
end
touch(tonumber(ARGV[2]))
return {'ok', redis.call('HGETALL', facts)}
"""
)

# ARGV: now_ms, ttl_ms, summary blob, covers_through_message_id. Returns 'ok', 'missing' or 'unknown_message'.
SUMMARY = (
    _TOUCH
    + """
local meta, ids = KEYS[1], KEYS[3]
if redis.call('EXISTS', meta) == 0 then return 'missing' end
if ARGV[4] ~= '' and redis.call('SISMEMBER', ids, ARGV[4]) == 0 then return 'unknown_message' end
redis.call('HSET', meta, 'summary', ARGV[3], 'updated_ms', ARGV[1])
redis.call('HINCRBY', meta, 'version', 1)
touch(tonumber(ARGV[2]))
return 'ok'
"""
)
