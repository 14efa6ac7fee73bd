//! The Lua scripts of both layouts: the native one's here, the durabledict-compatible one's in
//! [`durabledict`]. Every native write is one script: it validates the version
//! record, checks its condition, writes, bumps the version with a fresh stamp, records the stamp
//! in the stamp history, logs the change, trims old tombstones and publishes a hint, atomically.
//!
//! Calling convention of every native script:
//! - `KEYS[1]` version hash (`epoch`, `counter`, `stamp`, `parent`, `oldest`), `KEYS[2]` entries
//!   hash, `KEYS[3]` change log (sorted set, member = key, score = revision of the last write or
//!   delete), `KEYS[4]` tombstones (sorted set, member = deleted key, score = deletion time in
//!   ms), `KEYS[5]` expiries (sorted set, member = key of an entry written with a time to live,
//!   score = its expiry in ms on the server's clock; every other write or delete of the key
//!   removes it), `KEYS[6]` stamp history (a string of [`STAMP_HISTORY`] slots of 16 bytes: slot
//!   `counter % STAMP_HISTORY` holds the counter and the stamp of the write that produced it,
//!   both big-endian 64-bit).
//! - `ARGV[1]` a fresh random epoch and `ARGV[2]` a fresh stamp, used only if the version record
//!   must be created; `ARGV[3]` a fresh stamp for this write; `ARGV[4]` the two stamps as 16
//!   bytes (big-endian, `ARGV[2]`'s first); `ARGV[5]` tombstone retention in ms, `ARGV[6]`
//!   publish command (`PUBLISH`/`SPUBLISH`), `ARGV[7]` hint channel; operation arguments from
//!   `ARGV[8]`.
//! - Writes reply `{0, ...}` when nothing changed and `{1, epoch, counter, stamp, parent, ...}`
//!   otherwise. A read finding a damaged version record replies `{-2, field, value}` and writes
//!   nothing.
//! - Stamps and epochs stay decimal text in Lua (its numbers are doubles); counters are below
//!   2^53, so they are exact as numbers.
//! - The version record is validated before anything is written (Redis does not roll a script
//!   back on an error). A missing record, or one without stamps (written before they existed),
//!   is created afresh by reads and writes as after a wipe: a fresh epoch, the counter at the
//!   highest logged revision, a fresh stamp. A damaged one (a field missing, not canonical
//!   decimal text, or out of range) is refused by reads and created afresh by the next write.
//! - Times are the server's `TIME` in ms (a script may write after reading it: Redis 7
//!   replicates scripts by their effects).

use std::sync::LazyLock;

use durable_core::STAMP_HISTORY;
use redis::Script;

const PRELUDE: &str = r#"
local V, E, L, T, X, S = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local HISTORY = tonumber('@HISTORY@')
local LIMIT = 9007199254740992 -- 2^53: counters stay below it, exact as Lua numbers
local U64MAX = '18446744073709551615'
-- integers as decimal text (never in exponent notation)
local function n2s(n) return string.format('%d', n) end
-- Field checks, written for speed (a pattern match costs about a microsecond): digits are
-- checked once for all fields by record(); these check lengths and forms.
local function u64_len(s) return #s < 20 or (#s == 20 and s <= U64MAX) end
local function canonical(s) return #s == 1 or string.byte(s) ~= 48 end
local function digits(s) return type(s) == 'string' and string.find(s, '^%d+$') ~= nil end
local function is_u64(s) return digits(s) and u64_len(s) end
local function is_count(s) return digits(s) and #s <= 16 and tonumber(s) < LIMIT end
-- The version record, validated: {ep, c, stamp, parent, oldest}; or nil and 'missing' (no
-- record, or one from before stamps), or nil, the damaged field and its value. Epoch and stamp
-- are compared as text, so they must be canonical (no leading zero); the stamp is not 0.
local function record()
  local v = redis.call('HMGET', V, 'epoch', 'counter', 'stamp', 'parent', 'oldest')
  local ep, c, stamp, parent, oldest = v[1], v[2], v[3], v[4], v[5]
  if ep and c and stamp and parent and oldest
      and string.find(ep .. ',' .. c .. ',' .. stamp .. ',' .. parent .. ',' .. oldest, '^%d+,%d+,%d+,%d+,%d+$')
      and u64_len(ep) and canonical(ep) and u64_len(stamp) and canonical(stamp) and stamp ~= '0'
      and u64_len(parent) and #c <= 16 and #oldest <= 16 then
    local cn, on = tonumber(c), tonumber(oldest)
    if cn < LIMIT and on < LIMIT then
      return {ep = ep, c = cn, stamp = stamp, parent = parent, oldest = on}
    end
  end
  if not (ep or c or stamp or parent) then return nil, 'missing' end
  if not (is_u64(ep) and canonical(ep)) then return nil, 'epoch', ep end
  if not is_count(c) then return nil, 'counter', c end
  if not (stamp or parent) then return nil, 'missing' end
  if not (is_u64(stamp) and canonical(stamp)) or stamp == '0' then return nil, 'stamp', stamp end
  if not is_u64(parent) then return nil, 'parent', parent end
  return nil, 'oldest', oldest
end
-- records stamp (8 bytes) as the stamp of counter c in the history
local function remember(c, stamp)
  local hi = math.floor(c / 4294967296)
  redis.call('SETRANGE', S, (c % HISTORY) * 16, struct.pack('>I4I4', hi, c - hi * 4294967296) .. stamp)
end
-- creates the version record afresh, as after a wipe: a fresh epoch, a counter above every
-- logged revision (so that revisions never repeat), a fresh stamp, no history before it.
-- Scores that are no revision (negative, or 2^53 and above: written by hand) are left out.
local function create()
  local c = 0
  local top = redis.call('ZREVRANGEBYSCORE', L, '(' .. n2s(LIMIT), 0, 'WITHSCORES', 'LIMIT', 0, 1)
  if top[2] then c = math.floor(tonumber(top[2])) end
  if redis.call('EXISTS', V) == 1 then
    redis.log(redis.LOG_WARNING, 'durable: version record ' .. V .. ' damaged or without stamps, created afresh with epoch ' .. ARGV[1])
  end
  redis.call('DEL', V, S)
  redis.call('HSET', V, 'epoch', ARGV[1], 'counter', c, 'stamp', ARGV[2], 'parent', '0', 'oldest', c)
  remember(c, string.sub(ARGV[4], 1, 8))
  return {ep = ARGV[1], c = c, stamp = ARGV[2], parent = '0', oldest = c}
end
-- For reads: the current record, created if missing; nil, field and value if damaged.
local function current()
  local r, what, value = record()
  if r or what ~= 'missing' then return r, what, value end
  return create()
end
local function damaged(what, value)
  return {-2, what, value or false}
end
-- For writes, after record() validated the record (nil: missing or damaged): r moved one step
-- on, with the fresh stamp ARGV[3]. (Lua numbers pass to Redis as exact integer text below
-- 2^53.)
local function bump(r)
  if not r then r = create() end
  local c = r.c + 1
  redis.call('HSET', V, 'counter', c, 'stamp', ARGV[3], 'parent', r.stamp)
  remember(c, string.sub(ARGV[4], 9, 16))
  r.c, r.parent, r.stamp = c, r.stamp, ARGV[3]
  return r
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function trim(now, st)
  local old = redis.call('ZRANGEBYSCORE', T, '-inf', now - tonumber(ARGV[5]), 'LIMIT', 0, 128)
  if #old == 0 then return end
  local top = st.oldest
  for _, k in ipairs(old) do
    local s = tonumber(redis.call('ZSCORE', L, k) or '0')
    if s > top and s < LIMIT then top = math.floor(s) end
    if redis.call('HEXISTS', E, k) == 0 then redis.call('ZREM', L, k) end
  end
  redis.call('ZREM', T, unpack(old))
  redis.call('HSET', V, 'oldest', top)
end
-- records a write of k at rev, expiring at exp (ms; nil: never)
local function wrote(k, rev, exp)
  redis.call('ZADD', L, rev, k)
  redis.call('ZREM', T, k)
  if exp then
    redis.call('ZADD', X, n2s(exp), k)
  else
    redis.call('ZREM', X, k)
  end
end
local function put(k, val, rev, exp)
  redis.call('HSET', E, k, val)
  wrote(k, rev, exp)
end
local function del(k, rev, now)
  if redis.call('HDEL', E, k) == 0 then return false end
  redis.call('ZADD', L, rev, k)
  redis.call('ZADD', T, now, k)
  redis.call('ZREM', X, k)
  return true
end
-- the revision of k as its change-log score, as text (0 without one), for replies: Rust
-- checks that it is a revision (a Lua number would reach Redis truncated to an integer)
local function rev_of(k)
  return redis.call('ZSCORE', L, k) or '0'
end
-- the expiry of k in ms as text, or false (a nil in the reply) if it has none
local function exp_of(k)
  return redis.call('ZSCORE', X, k)
end
local function token(st)
  return {1, st.ep, st.c, st.stamp, st.parent}
end
local function done(st)
  trim(now_ms(), st)
  redis.call(ARGV[6], ARGV[7], st.c)
  return token(st)
end
"#;

fn script(body: &str) -> Script {
    let prelude = PRELUDE.replace("@HISTORY@", &STAMP_HISTORY.to_string());
    Script::new(&format!("{prelude}\n{body}"))
}

/// `ARGV[8]` key, `ARGV[9]` value.
pub(crate) static PERSIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local st = bump(record())
put(ARGV[8], ARGV[9], st.c)
return done(st)
"#,
    )
});

/// `ARGV[8]` key, `ARGV[9]` value, `ARGV[10]` time to live in ms. Done: `{1, epoch, counter,
/// stamp, parent, expiry}`.
pub(crate) static PERSIST_EXPIRING: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local st = bump(record())
local exp = now_ms() + tonumber(ARGV[10])
put(ARGV[8], ARGV[9], st.c, exp)
local r = done(st)
r[#r + 1] = exp
return r
"#,
    )
});

/// `ARGV[8]` key.
pub(crate) static DEPERSIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local r = record()
if redis.call('HEXISTS', E, ARGV[8]) == 0 then return {0} end
local st = bump(r)
del(ARGV[8], st.c, now_ms())
return done(st)
"#,
    )
});

/// `ARGV[8]` key, `ARGV[9]` value. Present: `{0, value, revision, expiry or nil}`.
pub(crate) static INSERT_IF_ABSENT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local r = record()
local cur = redis.call('HGET', E, ARGV[8])
if cur then return {0, cur, rev_of(ARGV[8]), exp_of(ARGV[8])} end
local st = bump(r)
put(ARGV[8], ARGV[9], st.c)
return done(st)
"#,
    )
});

/// `ARGV[8]` key, `ARGV[9]` expected revision (empty: absent), `ARGV[10]` `1` to store
/// `ARGV[11]`, `0` to delete. Conflict: `{0}` (absent) or `{0, value, revision, expiry or nil}`.
pub(crate) static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local r = record()
local k = ARGV[8]
local cur = redis.call('HGET', E, k)
local currev = nil
if cur then currev = rev_of(k) end
local matches
if ARGV[9] == '' then matches = (cur == false) else matches = (cur ~= false and tonumber(currev) == tonumber(ARGV[9])) end
if (not matches) or (cur == false and ARGV[10] == '0') then
  if cur then return {0, cur, currev, exp_of(k)} end
  return {0}
end
local st = bump(r)
if ARGV[10] == '1' then put(k, ARGV[11], st.c) else del(k, st.c, now_ms()) end
return done(st)
"#,
    )
});

/// `ARGV[8]` key. Popped: `{1, epoch, counter, stamp, parent, old value}`.
pub(crate) static POP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local r = record()
local cur = redis.call('HGET', E, ARGV[8])
if not cur then return {0} end
local st = bump(r)
del(ARGV[8], st.c, now_ms())
local out = done(st)
out[#out + 1] = cur
return out
"#,
    )
});

/// Shared by both layouts: adds `delta` to the ASCII decimal integer in hash `h` field `k`
/// exactly (HINCRBY: 64-bit, overflow checked), accepting what Rust's `i64` parser accepts
/// (`+5`, `007`) by normalising first. Returns the new value's text, or nil after restoring
/// the old value when it is not an integer or the result overflows. Callers validate their
/// version record before calling it.
const INCREMENT_FN: &str = r#"
local function incr(h, k, delta)
  local old = redis.call('HGET', h, k)
  local r = redis.pcall('HINCRBY', h, k, delta)
  if type(r) == 'table' and r.err then
    if not old then return nil end
    local sign, digits = string.match(old, '^([+-]?)(%d+)$')
    if not sign then return nil end
    digits = (string.gsub(digits, '^0+', ''))
    if digits == '' then digits = '0' end
    if sign == '+' or digits == '0' then sign = '' end
    local canon = sign .. digits
    if canon == old then return nil end
    redis.call('HSET', h, k, canon)
    r = redis.pcall('HINCRBY', h, k, delta)
    if type(r) == 'table' and r.err then
      redis.call('HSET', h, k, old)
      return nil
    end
  end
  return redis.call('HGET', h, k)
end
"#;

/// `ARGV[8]` key, `ARGV[9]` delta. Not an integer: `{-1}`. Done: `{1, epoch, counter, stamp,
/// parent, new}`.
pub(crate) static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r#"{INCREMENT_FN}
local r = record()
local new = incr(E, ARGV[8], ARGV[9])
if not new then return {{-1}} end
local st = bump(r)
wrote(ARGV[8], st.c)
local out = done(st)
out[#out + 1] = new
return out
"#
    ))
});

/// From `ARGV[8]`: triples (`P` key value | `D` key ``).
pub(crate) static BATCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local r = record()
local changes = false
for i = 8, #ARGV, 3 do
  if ARGV[i] == 'P' or redis.call('HEXISTS', E, ARGV[i + 1]) == 1 then
    changes = true
    break
  end
end
if not changes then return {0} end
local st = bump(r)
local now = now_ms()
for i = 8, #ARGV, 3 do
  if ARGV[i] == 'P' then put(ARGV[i + 1], ARGV[i + 2], st.c) else del(ARGV[i + 1], st.c, now) end
end
return done(st)
"#,
    )
});

/// Deletes every entry with one bump, in time independent of their number: the change log
/// restarts, so handles behind the new token reload (an empty dictionary) instead of reading a
/// tombstone per key.
pub(crate) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local r = record()
if redis.call('HLEN', E) == 0 then return {0} end
local st = bump(r)
-- No tombstone per key (a script writing one for each of 10M keys blocks the server for
-- seconds): the entries, expiries and change log go at once, freed off the main thread, and
-- the log restarts at this counter, so an earlier token is served a full load (of an empty
-- dictionary) instead of a delta.
redis.call('UNLINK', E, X, L, T)
redis.call('HSET', V, 'oldest', st.c)
return done(st)
"#,
    )
});

/// Deletes the entries whose expiry is at or before the server's time, with one bump: at most
/// 10,000 per call, earliest first, so that one script never blocks the server for long (the
/// engine sweeps again while expired entries remain). Swept: `{1, epoch, counter, stamp,
/// parent, key...}`. Members of the expiry index without an entry (possible only after a hand
/// edit) are dropped from it without a bump.
pub(crate) static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local r = record()
local now = now_ms()
local swept = {}
local due = redis.call('ZRANGEBYSCORE', X, '-inf', n2s(now), 'LIMIT', 0, 10000)
for _, k in ipairs(due) do
  if redis.call('HEXISTS', E, k) == 1 then swept[#swept + 1] = k else redis.call('ZREM', X, k) end
end
if #swept == 0 then return {0} end
local st = bump(r)
for _, k in ipairs(swept) do del(k, st.c, now) end
local out = done(st)
for _, k in ipairs(swept) do out[#out + 1] = k end
return out
"#,
    )
});

/// The server's clock in ms, `{now}` (run with the dictionary's keys, so a cluster answers from
/// the node whose clock the dictionary's expiries use).
pub(crate) static NOW: LazyLock<Script> = LazyLock::new(|| script("return {now_ms()}"));

/// The current token, creating the version record if it is missing: `{1, epoch, counter,
/// stamp, parent}`.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local st, what, value = current()
if not st then return damaged(what, value) end
return token(st)
"#,
    )
});

/// Trims every tombstone now and makes the current counter the oldest one served (so only the
/// current token is served a delta): `{1, epoch, counter, stamp, parent}`.
pub(crate) static FORGET_HISTORY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local st, what, value = current()
if not st then return damaged(what, value) end
local tombs = redis.call('ZRANGE', T, 0, -1)
for _, k in ipairs(tombs) do
  if redis.call('HEXISTS', E, k) == 0 then redis.call('ZREM', L, k) end
end
redis.call('DEL', T)
redis.call('HSET', V, 'oldest', st.c)
return token(st)
"#,
    )
});

/// `ARGV[8]` caller's epoch, `ARGV[9]` caller's counter, `ARGV[10]` caller's stamp, `ARGV[11]`
/// the history slot the caller's token must find (its counter and stamp, 16 bytes), `ARGV[12]`
/// most changes served. Too old: `{0}`. Otherwise `{1, epoch, counter, stamp, parent, (key,
/// revision, value or nil, expiry or nil)...}`.
pub(crate) static CHANGES: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local st, what, value = current()
if not st then return damaged(what, value) end
local since = tonumber(ARGV[9])
if st.ep ~= ARGV[8] or not since or since < st.oldest or since > st.c then return {0} end
if not (since == st.c and st.stamp == ARGV[10]) then
  -- the caller's state must be one of this history: its stamp recorded for its counter
  local at = (since % HISTORY) * 16
  if redis.call('GETRANGE', S, at, at + 15) ~= ARGV[11] then return {0} end
end
local out = token(st)
if since == st.c then return out end
local from = '(' .. ARGV[9]
if redis.call('ZCOUNT', L, from, '+inf') > tonumber(ARGV[12]) then return {0} end
local changed = redis.call('ZRANGEBYSCORE', L, from, '+inf', 'WITHSCORES')
for i = 1, #changed, 2 do
  out[#out + 1] = changed[i]
  out[#out + 1] = changed[i + 1]
  out[#out + 1] = redis.call('HGET', E, changed[i])
  out[#out + 1] = exp_of(changed[i])
end
return out
"#,
    )
});

/// The first chunk of a full load, atomic with the token: `ARGV[8]` HSCAN cursor (`0`),
/// `ARGV[9]` COUNT hint. Later chunks are plain `HSCAN` pages, a `ZRANGE` walk of the log and
/// `ZSCAN` pages of the expiries (cheaper than passing every value through Lua), repaired
/// afterwards with the changes since the token.
/// `{1, epoch, counter, stamp, parent, next cursor, (key, value, revision, expiry or nil)...}`.
pub(crate) static LOAD_CHUNK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local st, what, value = current()
if not st then return damaged(what, value) end
local r = redis.call('HSCAN', E, ARGV[8], 'COUNT', ARGV[9])
local out = token(st)
out[#out + 1] = r[1]
local kv = r[2]
if #kv == 0 then return out end
local ks = {}
for i = 1, #kv, 2 do ks[#ks + 1] = kv[i] end
local revs = redis.call('ZMSCORE', L, unpack(ks))
local exps = redis.call('ZMSCORE', X, unpack(ks))
for i = 1, #ks do
  out[#out + 1] = ks[i]
  out[#out + 1] = kv[2 * i]
  out[#out + 1] = revs[i] or '0'
  out[#out + 1] = exps[i]
end
return out
"#,
    )
});

/// The scripts of the Python durabledict-compatible layout
/// ([`DurabledictBackend`](crate::DurabledictBackend)): operation arguments from `ARGV[1]`;
/// done: `{1, new counter, ...}`, nothing changed: `{0, ...}`.
pub(crate) mod durabledict {
    use std::sync::LazyLock;

    use redis::Script;

    use super::INCREMENT_FN;

    // KEYS[1] the hash `<keyspace>`, KEYS[2] the counter `<keyspace>last_updated`. Every script
    // validates the counter before it writes anything (Redis does not roll a script back on an
    // error): `{-2, value}` when it is not decimal text of an integer in 0..2^53, or missing while
    // the hash holds entries (`{-2}`).
    const CHECK: &str = r#"
local function damaged()
  local c = redis.call('GET', KEYS[2])
  if not c then
    if redis.call('EXISTS', KEYS[1]) == 1 then return {-2} end
    return nil
  end
  if not ((c == '0' or string.find(c, '^[1-9]%d*$')) and #c <= 16 and tonumber(c) < 9007199254740992) then
    return {-2, c}
  end
  return nil
end
local bad = damaged()
if bad then return bad end
"#;

    fn script(body: &str) -> Script {
        Script::new(&format!("{CHECK}\n{body}"))
    }

    pub(crate) static PERSIST: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, redis.call('INCRBY', KEYS[2], 1)}
"#,
        )
    });

    pub(crate) static DEPERSIST: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {0} end
return {1, redis.call('INCRBY', KEYS[2], 1)}
"#,
        )
    });

    pub(crate) static INSERT_IF_ABSENT: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return {0, redis.call('HGET', KEYS[1], ARGV[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {1, redis.call('INCRBY', KEYS[2], 1)}
"#,
        )
    });

    pub(crate) static POP: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {0} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {1, redis.call('INCRBY', KEYS[2], 1), v}
"#,
        )
    });

    pub(crate) static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
        script(&format!(
            r#"{INCREMENT_FN}
local new = incr(KEYS[1], ARGV[1], ARGV[2])
if not new then return {{-1}} end
return {{1, redis.call('INCRBY', KEYS[2], 1), new}}
"#
        ))
    });

    pub(crate) static BATCH: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
local changes = false
for i = 1, #ARGV, 3 do
  if ARGV[i] == 'P' or redis.call('HEXISTS', KEYS[1], ARGV[i + 1]) == 1 then
    changes = true
    break
  end
end
if not changes then return {0} end
for i = 1, #ARGV, 3 do
  if ARGV[i] == 'P' then
    redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
  else
    redis.call('HDEL', KEYS[1], ARGV[i + 1])
  end
end
return {1, redis.call('INCRBY', KEYS[2], 1)}
"#,
        )
    });

    pub(crate) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
        script(
            r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
-- UNLINK: a big hash is freed off the server's main thread.
redis.call('UNLINK', KEYS[1])
return {1, redis.call('INCRBY', KEYS[2], 1)}
"#,
        )
    });
}
