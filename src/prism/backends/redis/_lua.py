"""The Lua scripts that make the Redis backend's writes atomic, and its multi-key reads one round trip.

Every key of a namespace starts with ``base`` (``prefix:{ns}:``). A record ``r`` is:

* ``base..'e:'..r``: its item with the empty key (a flat entry), a string holding
  the metadata, a newline, then the value;
* ``base..'h:'..r``: its other items, a hash with ``'m'..key`` (metadata) and
  ``'v'..key`` (value) per item;
* ``base..'z:'..r``: those item keys at score 0, for ZRANGEBYLEX;
* ``base..'x:'..r``: those of them that expire, scored by expiry (epoch seconds).

``base..'ids'`` holds the namespace's record ids at score 0, for scans; a record is
listed there whenever its ``e:`` or ``h:`` key exists. ``base..'exp'`` schedules
records whose items all expire, scored by when to look at them again: write calls
that set a TTL or delete sweep a few that are due, so the ids of records that
expired untouched do not pile up in ``ids``. Metadata is
``expires\\netag\\nupdated\\ncontent_type`` with ``expires`` empty for no expiry.

Scripts declare the namespace index (or the record's keys) and build the other key
names from ``base``; every key of a namespace shares its hash tag, so they stay in
one slot. Expiry is judged against the ``now`` the client passes, the clock that
computed ``expires``; native key expiry only reclaims memory, a grace after that.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "DELETE_RANGE",
    "GET_MANY",
    "GET_RANGE",
    "LOG_PUTS",
    "PUT",
    "PUT_LOGGED",
    "READ_CHANGES",
    "SCAN",
    "TAKE_TOKEN",
    "WRITE",
    "Script",
]


class Script:
    """A Lua script and its SHA1, for EVALSHA with a fallback to EVAL on NOSCRIPT."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


# Helpers shared by the scripts that write. ``now`` is in epoch seconds.
_PRELUDE = r"""
local call = redis.call
local match = string.match

-- native expiry beyond this many milliseconds of the epoch is left unset
local MAX_NATIVE_MS = 1e15
-- bytes read from the head of a flat entry to find its expiry and etag (a longer
-- head is read whole)
local HEAD_BYTES = 256

local function is_live(meta, now)
  local exp = match(meta, '^[^\n]*')
  return exp == '' or tonumber(exp) > now
end

-- the PEXPIREAT argument for an expiry in epoch seconds, or nil for none
local function native_ms(expires, grace)
  local ms = math.ceil(tonumber(expires) * 1000) + grace
  if ms >= MAX_NATIVE_MS then
    return nil
  end
  return string.format('%d', ms)
end

-- how long a record lasts: true if it holds a live item without expiry, else the
-- latest expiry of its live items, or false when nothing live is left
local function lasts_until(base, record, now)
  local latest = false
  local head = call('GETRANGE', base .. 'e:' .. record, 0, HEAD_BYTES - 1)
  if head ~= '' then
    local exp = match(head, '^[^\n]*')
    if exp == '' then
      return true
    end
    if tonumber(exp) > now then
      latest = tonumber(exp)
    end
  end
  local fields = call('HLEN', base .. 'h:' .. record)
  if fields > 0 then
    local x = base .. 'x:' .. record
    if fields / 2 > call('ZCARD', x) then
      return true
    end
    local top = call('ZRANGE', x, -1, -1, 'WITHSCORES')
    local exp = tonumber(top[2])
    if exp > now and (not latest or exp > latest) then
      latest = exp
    end
  end
  return latest
end

-- the change feed: a stream of the namespace, or false when the store keeps none
local feed = false
local feed_max, feed_age_ms = 0, 0

-- log one change: op 'p' (put, with the etag and update time of the item) or 'd' (delete)
local function log_change(record, key, op, etag, updated)
  if feed then
    call('XADD', feed, '*', 'r', record, 'k', key, 'o', op, 't', etag, 'u', updated)
  end
end

-- log the put of an item stored as metadata (expires, etag, updated, ...) and value
local function log_put(record, key, packed)
  if feed then
    local etag, updated = match(packed, '^[^\n]*\n([^\n]*)\n([^\n]*)\n')
    call('XADD', feed, '*', 'r', record, 'k', key, 'o', 'p', 't', etag, 'u', updated)
  end
end

-- drop the changes past the feed's retention: beyond its length, and older than its age
-- by the server's clock (whole stream nodes at a time: '~')
local function trim_feed()
  if feed then
    call('XTRIM', feed, 'MAXLEN', '~', feed_max)
    local t = call('TIME')
    local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - feed_age_ms
    if oldest > 0 then
      call('XTRIM', feed, 'MINID', '~', string.format('%d', oldest))
    end
  end
end

-- delete a record with nothing live left, and its entries in the namespace's sets
local function drop_record(base, record)
  call('DEL', base .. 'e:' .. record, base .. 'h:' .. record, base .. 'z:' .. record, base .. 'x:' .. record)
  call('ZREM', base .. 'ids', record)
  call('ZREM', base .. 'exp', record)
end

-- after the hash items of a record changed: drop the record once nothing is left,
-- else put the native expiry of its hash keys in line with their items
local function settle(base, record, grace)
  local h, z, x = base .. 'h:' .. record, base .. 'z:' .. record, base .. 'x:' .. record
  local fields = call('HLEN', h)
  if fields == 0 then
    call('DEL', z, x)
    if call('EXISTS', base .. 'e:' .. record) == 0 then
      call('ZREM', base .. 'ids', record)
      call('ZREM', base .. 'exp', record)
    end
    return
  end
  local at = nil
  if fields / 2 == call('ZCARD', x) then
    local top = call('ZRANGE', x, -1, -1, 'WITHSCORES')
    at = native_ms(top[2], grace)
  end
  if at then
    call('PEXPIREAT', h, at)
    call('PEXPIREAT', z, at)
    call('PEXPIREAT', x, at)
  else
    call('PERSIST', h)
    call('PERSIST', z)
    call('PERSIST', x)
  end
end
"""

WRITE = Script(
    "write",
    "#!lua\n"
    + _PRELUDE
    + r"""
-- KEYS: namespace index, expiry schedule, and the change feed's stream when the store
-- keeps one. ARGV: now, mode, grace ms, purge limit, sweep limit, key base, the feed's
-- most changes and its retention in ms (both ignored without a feed), then two per
-- op. Mode '0' applies each op on its own, '1' all or none (returning {1, codes...}
-- or {0, failing op, existed}); for both an op is record NUL key NUL condition
-- (condition '' | 'A' (absent) | 'M'..etag), then the metadata, a newline and the
-- value ('' = delete). Mode 'p' takes unconditional
-- puts of flat entries, each as the record id and the stored string. Returns per op
-- 0/1 (condition failed; 1 = a live item existed) or 2/3 (applied).
local index, expiring = KEYS[1], KEYS[2]
local now_arg = ARGV[1]
local now = tonumber(now_arg)
local mode = ARGV[2]
local grace = tonumber(ARGV[3])
local purge_limit = tonumber(ARGV[4])
local sweep_limit = tonumber(ARGV[5])
local base = ARGV[6]
local count = (#ARGV - 8) / 2
if KEYS[3] then
  feed, feed_max, feed_age_ms = KEYS[3], ARGV[7], tonumber(ARGV[8])
end

-- look again at a few records scheduled to have expired
if sweep_limit > 0 then
  local due = call('ZRANGEBYSCORE', expiring, '-inf', now_arg, 'LIMIT', 0, sweep_limit)
  for _, record in ipairs(due) do
    local last = lasts_until(base, record, now)
    if last == false then
      drop_record(base, record)
    elseif last == true then
      call('ZREM', expiring, record)
    else
      call('ZADD', expiring, last, record)
    end
  end
end

if mode == 'p' then
  local out = {}
  for i = 1, count do
    local record, packed = ARGV[7 + 2 * i], ARGV[8 + 2 * i]
    local e = base .. 'e:' .. record
    local expires = match(packed, '^[^\n]*')
    local at = expires ~= '' and native_ms(expires, grace)
    local old
    if at then
      old = call('SET', e, packed, 'PXAT', at, 'GET')
    else
      old = call('SET', e, packed, 'GET')
    end
    if expires ~= '' then
      call('ZADD', expiring, 'NX', expires, record)
    end
    if not old then
      call('ZADD', index, 0, record)
      out[i] = 2
    else
      out[i] = is_live(old, now) and 3 or 2
    end
    log_put(record, '', packed)
  end
  trim_feed()
  return out
end

local function op(i)
  local record, key, cond = match(ARGV[7 + 2 * i], '^(.-)%z(.-)%z(.*)$')
  return record, key, cond, ARGV[8 + 2 * i]
end

-- the stored metadata of an item (at least its expiry and etag; live or not), or false
local function stored(record, key)
  if key ~= '' then
    return call('HGET', base .. 'h:' .. record, 'm' .. key)
  end
  local e = base .. 'e:' .. record
  local head = call('GETRANGE', e, 0, HEAD_BYTES - 1)
  if head == '' then
    return false
  end
  return match(head, '^[^\n]*\n[^\n]*\n') or call('GET', e)
end

-- the etag of the live item with metadata meta, or false
local function live_etag(meta)
  if not meta or not is_live(meta, now) then
    return false
  end
  local _, etag = match(meta, '^([^\n]*)\n([^\n]*)')
  return etag
end

local function holds(cond, current)
  if cond == '' then
    return true
  end
  if cond == 'A' then
    return not current
  end
  return current == string.sub(cond, 2)
end

-- drop a bounded number of the record's expired hash items
local function purge(record)
  local h, z, x = base .. 'h:' .. record, base .. 'z:' .. record, base .. 'x:' .. record
  local dead = call('ZRANGEBYSCORE', x, '-inf', now_arg, 'LIMIT', 0, purge_limit)
  if #dead == 0 then
    return
  end
  for _, key in ipairs(dead) do
    call('HDEL', h, 'm' .. key, 'v' .. key)
  end
  call('ZREM', x, unpack(dead))
  call('ZREM', z, unpack(dead))
end

-- write the flat entry; old is its stored metadata or false, or nil when unknown
-- (then the SET fetches it). Returns the metadata that was there, or false.
local function apply_flat(record, packed, old)
  local e = base .. 'e:' .. record
  if packed == '' then
    if old then
      call('DEL', e)
      if call('EXISTS', base .. 'h:' .. record) == 0 then
        call('ZREM', index, record)
        call('ZREM', expiring, record)
      else
        -- the items left may all expire: have the sweep look at the record
        call('ZADD', expiring, now_arg, record)
      end
      log_change(record, '', 'd', '', now_arg)
    end
    return old
  end
  local expires = match(packed, '^[^\n]*')
  local at = expires ~= '' and native_ms(expires, grace) or nil
  if old ~= nil then
    if at then
      call('SET', e, packed, 'PXAT', at)
    else
      call('SET', e, packed)
    end
  elseif at then
    old = call('SET', e, packed, 'PXAT', at, 'GET')
  else
    old = call('SET', e, packed, 'GET')
  end
  if not old then
    call('ZADD', index, 0, record)
  end
  if expires ~= '' then
    call('ZADD', expiring, 'NX', expires, record)
  end
  log_put(record, '', packed)
  return old
end

local function apply_item(record, key, packed, old)
  local h, z, x = base .. 'h:' .. record, base .. 'z:' .. record, base .. 'x:' .. record
  local old_expires = old and match(old, '^[^\n]*') or ''
  if packed == '' then
    if old then
      call('HDEL', h, 'm' .. key, 'v' .. key)
      call('ZREM', z, key)
      if old_expires ~= '' then
        call('ZREM', x, key)
      end
      purge(record)
      call('ZADD', expiring, now_arg, record)
      settle(base, record, grace)
      log_change(record, key, 'd', '', now_arg)
    end
    return
  end
  local meta, at = match(packed, '^([^\n]*\n[^\n]*\n[^\n]*\n[^\n]*)\n()')
  if not old then
    call('ZADD', index, 0, record)
    call('ZADD', z, 0, key)
  end
  call('HSET', h, 'm' .. key, meta, 'v' .. key, string.sub(packed, at))
  log_put(record, key, meta .. '\n')
  local expires = match(meta, '^[^\n]*')
  if expires ~= '' then
    call('ZADD', x, expires, key)
    call('ZADD', expiring, 'NX', expires, record)
    purge(record)
    settle(base, record, grace)
    return
  end
  if old_expires ~= '' then
    call('ZREM', x, key)
  end
  -- an item without expiry keeps the record's keys
  if call('PTTL', h) >= 0 then
    call('PERSIST', h)
    call('PERSIST', z)
    call('PERSIST', x)
  end
end

local function apply(record, key, packed, old)
  if key == '' then
    apply_flat(record, packed, old)
  else
    apply_item(record, key, packed, old)
  end
end

local out = {}
if mode == '1' then
  -- check every condition against the state the earlier ops leave, then apply them all
  local pending = {}
  for i = 1, count do
    local record, key, cond, packed = op(i)
    local slot = record .. '\0' .. key
    local current = pending[slot]
    if current == nil then
      current = live_etag(stored(record, key))
    end
    if not holds(cond, current) then
      return {0, i, current and 1 or 0}
    end
    out[i + 1] = current and 3 or 2
    pending[slot] = packed ~= '' and live_etag(packed)
  end
  out[1] = 1
  for i = 1, count do
    local record, key, _, packed = op(i)
    apply(record, key, packed, stored(record, key))
  end
  trim_feed()
  return out
end

for i = 1, count do
  local record, key, cond, packed = op(i)
  if key == '' and cond == '' and packed ~= '' then
    -- an unconditional put: the SET itself returns what was there
    out[i] = live_etag(apply_flat(record, packed, nil)) and 3 or 2
  else
    local old = stored(record, key)
    local current = live_etag(old)
    if holds(cond, current) then
      apply(record, key, packed, old)
      out[i] = current and 3 or 2
    else
      out[i] = current and 1 or 0
    end
  end
end
trim_feed()
return out
""",
)

PUT = Script(
    "put",
    r"""
-- One unconditional put of a flat entry without expiry (the write script's work for it,
-- without the rest of that script). KEYS: namespace index, the entry. ARGV: now, record
-- id, the stored string. Returns 1 when it replaced a live entry, else 0.
local old = redis.call('SET', KEYS[2], ARGV[3], 'GET')
if not old then
  redis.call('ZADD', KEYS[1], 0, ARGV[2])
  return 0
end
local exp = string.match(old, '^[^\n]*')
return (exp == '' or tonumber(exp) > tonumber(ARGV[1])) and 1 or 0
""",
)

PUT_LOGGED = Script(
    "put",
    r"""
-- The PUT script of a store that keeps a change feed: the put, its change and the feed's
-- trim together (the trim as in the write script). KEYS: namespace index, the entry, the
-- feed's stream. ARGV: now, record id, the stored string, the feed's most changes, its
-- retention in ms. Returns as PUT does.
local call = redis.call
local feed = KEYS[3]
local old = call('SET', KEYS[2], ARGV[3], 'GET')
local etag, updated = string.match(ARGV[3], '^[^\n]*\n([^\n]*)\n([^\n]*)\n')
call('XADD', feed, '*', 'r', ARGV[2], 'k', '', 'o', 'p', 't', etag, 'u', updated)
call('XTRIM', feed, 'MAXLEN', '~', ARGV[4])
local t = call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[5])
if oldest > 0 then
  call('XTRIM', feed, 'MINID', '~', string.format('%d', oldest))
end
if not old then
  call('ZADD', KEYS[1], 0, ARGV[2])
  return 0
end
local exp = string.match(old, '^[^\n]*')
return (exp == '' or tonumber(exp) > tonumber(ARGV[1])) and 1 or 0
""",
)

LOG_PUTS = Script(
    "log_puts",
    r"""
-- The changes of a put_many of plain commands, queued in its MULTI after them (so that
-- they commit together), then the feed's trim. Sent as EVAL: a script unknown to the
-- server would fail inside the transaction after the puts were applied.
-- KEYS: the feed's stream. ARGV: its most changes, its retention in ms, then per put
-- the record id, the etag and the update time.
local call = redis.call
local feed = KEYS[1]
for i = 3, #ARGV, 3 do
  call('XADD', feed, '*', 'r', ARGV[i], 'k', '', 'o', 'p', 't', ARGV[i + 1], 'u', ARGV[i + 2])
end
call('XTRIM', feed, 'MAXLEN', '~', ARGV[1])
local t = call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
if oldest > 0 then
  call('XTRIM', feed, 'MINID', '~', string.format('%d', oldest))
end
return 0
""",
)

READ_CHANGES = Script(
    "read_changes",
    "#!lua flags=no-writes\n"
    + r"""
-- KEYS: the feed's stream. ARGV: the entry id to read after ('' for none: just the
-- newest), its number (entries are numbered 1, 2, ... as they are added), most changes
-- to return, most to examine, record id prefix.
-- Returns {0, id and number of the last entry examined (or of the newest), then per
-- change: id, number, fields} when every change after the id is still there; {1} when
-- some were trimmed, {2} when the id or number is past the newest one.
-- Nothing but trimming removes entries, oldest first, so the stream holds entries
-- added - length + 1 to added, and an entry numbered n is followed by n + 1; a cursor
-- of an entry that should be there but is not comes from another stream (one lost by
-- a restart without persistence, say), and so is past the newest too.
local call = redis.call
local stream = KEYS[1]
local after, number = ARGV[1], tonumber(ARGV[2])
local limit, budget, prefix = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function before(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

local newest, added, length = '0-0', 0, 0
if call('EXISTS', stream) == 1 then
  local info = call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    local field = info[i]
    if field == 'last-generated-id' then
      newest = info[i + 1]
    elseif field == 'entries-added' then
      added = info[i + 1]
    elseif field == 'length' then
      length = info[i + 1]
    end
  end
end
if after == '' then
  return {0, newest, added}
end
if before(newest, after) or number > added then
  return {2}
end
if number < added - length then
  return {1}
end
if number > added - length and #call('XRANGE', stream, after, after) == 0 then
  -- the entry should still be there: the stream is not the one the cursor came from
  return {2}
end
local out = {0, after, number}
local found = 0
local lo = '(' .. after
while found < limit and budget > 0 do
  local want = math.min(budget, 100)
  local entries = call('XRANGE', stream, lo, '+', 'COUNT', want)
  for _, entry in ipairs(entries) do
    number = number + 1
    out[2], out[3] = entry[1], number
    local record = entry[2][2]
    if prefix == '' or string.sub(record, 1, #prefix) == prefix then
      out[#out + 1] = entry[1]
      out[#out + 1] = number
      out[#out + 1] = entry[2]
      found = found + 1
      if found == limit then
        return out
      end
    end
  end
  budget = budget - #entries
  if #entries < want then
    return out
  end
  lo = '(' .. out[2]
end
return out
""",
)

GET_MANY = Script(
    "get_many",
    "#!lua flags=no-writes\n"
    + r"""
-- KEYS[1]: namespace index (for routing). ARGV: key base, then per address
-- record NUL item key. Returns two values per address: for the empty item key the
-- stored string and 0, else the metadata and the value (false where absent).
local call = redis.call
local base = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local record, key = string.match(ARGV[i], '^(.-)%z(.*)$')
  if key == '' then
    out[2 * i - 3] = call('GET', base .. 'e:' .. record)
    out[2 * i - 2] = 0
  else
    local r = call('HMGET', base .. 'h:' .. record, 'm' .. key, 'v' .. key)
    out[2 * i - 3] = r[1]
    out[2 * i - 2] = r[2]
  end
end
return out
""",
)

GET_RANGE = Script(
    "get_range",
    "#!lua flags=no-writes\n"
    + r"""
-- KEYS: the record's flat entry, hash, item keys. ARGV: now, lex min, lex max,
-- limit, examine budget, '1' to read the flat entry first.
-- Returns {exhausted, last key examined, then per live item: key, metadata, value}
-- where the flat entry comes as '', its stored string, 0.
local call = redis.call
local match = string.match
local e, h, z = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local lo, hi = ARGV[2], ARGV[3]
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {0, ''}
local found = 0

local function is_live(meta)
  local exp = match(meta, '^[^\n]*')
  return exp == '' or tonumber(exp) > now
end

if ARGV[6] == '1' then
  local flat = call('GET', e)
  if flat and is_live(flat) then
    out[3], out[4], out[5] = '', flat, 0
    found = 1
  end
end
while found < limit do
  local want = math.min(limit - found, budget)
  if want <= 0 then
    return out
  end
  local keys = call('ZRANGEBYLEX', z, lo, hi, 'LIMIT', 0, want)
  for _, key in ipairs(keys) do
    local r = call('HMGET', h, 'm' .. key, 'v' .. key)
    if r[1] and r[2] and is_live(r[1]) then
      out[#out + 1] = key
      out[#out + 1] = r[1]
      out[#out + 1] = r[2]
      found = found + 1
    end
  end
  budget = budget - #keys
  if #keys < want then
    out[1] = 1
    return out
  end
  out[2] = keys[#keys]
  lo = '(' .. keys[#keys]
end
return out
""",
)

SCAN = Script(
    "scan",
    "#!lua flags=allow-oom\n"
    + _PRELUDE
    + r"""
-- KEYS: namespace index. ARGV: now, lex min, lex max, limit, examine budget, key base.
-- Returns {exhausted, last id examined, id, ...} with the ids of records that hold a
-- live item; records with none left are deleted on the way.
local index = KEYS[1]
local now = tonumber(ARGV[1])
local lo, hi = ARGV[2], ARGV[3]
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local base = ARGV[6]
local out = {0, ''}
local found = 0

while found < limit do
  local want = math.min(limit - found, budget)
  if want <= 0 then
    return out
  end
  local ids = call('ZRANGEBYLEX', index, lo, hi, 'LIMIT', 0, want)
  for _, id in ipairs(ids) do
    if lasts_until(base, id, now) then
      out[#out + 1] = id
      found = found + 1
    else
      drop_record(base, id)
    end
  end
  budget = budget - #ids
  if #ids < want then
    out[1] = 1
    return out
  end
  out[2] = ids[#ids]
  lo = '(' .. ids[#ids]
end
return out
""",
)

DELETE_RANGE = Script(
    "delete_range",
    "#!lua\n"
    + _PRELUDE
    + r"""
-- KEYS: namespace index, expiry schedule, the record's flat entry, hash, item keys,
-- expiries, and the change feed's stream when the store keeps one. ARGV: now, lex min,
-- lex max, '1' to include the flat entry, batch, record id, grace ms, key base, the
-- feed's most changes and its retention in ms. Deletes up to a batch of the range's
-- items; returns {live items deleted, more left}.
local e, h, z, x = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if KEYS[7] then
  feed, feed_max, feed_age_ms = KEYS[7], ARGV[9], tonumber(ARGV[10])
end
local now = tonumber(ARGV[1])
local batch = tonumber(ARGV[5])
local live = 0

if ARGV[4] == '1' then
  local head = call('GETRANGE', e, 0, HEAD_BYTES - 1)
  if head ~= '' then
    if is_live(head, now) then
      live = live + 1
    end
    call('DEL', e)
    log_change(ARGV[6], '', 'd', '', ARGV[1])
  end
end
local keys = call('ZRANGEBYLEX', z, ARGV[2], ARGV[3], 'LIMIT', 0, batch)
for _, key in ipairs(keys) do
  local meta = call('HGET', h, 'm' .. key)
  if meta then
    if is_live(meta, now) then
      live = live + 1
    end
    call('HDEL', h, 'm' .. key, 'v' .. key)
    log_change(ARGV[6], key, 'd', '', ARGV[1])
  end
end
if #keys > 0 then
  call('ZREM', z, unpack(keys))
  call('ZREM', x, unpack(keys))
end
-- the items left may all expire: have the next write's sweep look at the record
call('ZADD', KEYS[2], ARGV[1], ARGV[6])
settle(ARGV[8], ARGV[6], tonumber(ARGV[7]))
trim_feed()
return {live, #keys == batch and 1 or 0}
""",
)

# A shared token bucket: KEYS[1] is a hash of ``tokens`` and ``stamp`` (server seconds at the
# last refill); ARGV = rate (tokens per second), burst, and the key's time to live in ms (the
# time a full refill takes, after which an absent bucket is the same as a full one). The
# server's clock times the refill, so clients with skewed clocks share one rate. Returns the
# seconds until a token is there as a string: "0" when one was taken.
TAKE_TOKEN = Script(
    "take_token",
    r"""
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = burst, now
if state[1] and state[2] then
  tokens = math.min(burst, tonumber(state[1]))
  stamp = tonumber(state[2])
  if now > stamp then
    tokens = math.min(burst, tokens + (now - stamp) * rate)
    stamp = now
  end
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp', string.format('%.6f', stamp))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return string.format('%.17g', wait)
""",
)
