//! The Lua scripts of the native layout. Every write is one script: it checks, writes, bumps
//! the version, logs the change, trims old tombstones and publishes a hint, atomically.
//!
//! Calling convention of every native script:
//! - `KEYS[1]` version hash (`epoch`, `counter`, `oldest`), `KEYS[2]` entries hash, `KEYS[3]`
//!   change log (sorted set, member = key, score = revision of the last write or delete),
//!   `KEYS[4]` tombstones (sorted set, member = deleted key, score = deletion time in ms),
//!   `KEYS[5]` expiries (sorted set, member = key of an entry written with a time to live,
//!   score = its expiry in ms on the server's clock; every other write or delete of the key
//!   removes it).
//! - `ARGV[1]` a fresh random epoch (used only if the version record must be created),
//!   `ARGV[2]` tombstone retention in ms, `ARGV[3]` publish command (`PUBLISH`/`SPUBLISH`),
//!   `ARGV[4]` hint channel; operation arguments from `ARGV[5]`.
//! - Writes reply `{0, ...}` when nothing changed and `{1, epoch, counter, ...}` otherwise.
//! - Times are the server's `TIME` in ms (a script may write after reading it: Redis 7
//!   replicates scripts by their effects).

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = r#"
local V, E, L, T, X = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function current()
  local v = redis.call('HMGET', V, 'epoch', 'counter')
  if not v[1] then
    -- missing version record (new dictionary, FLUSHALL, eviction): a fresh epoch, and a
    -- counter above every logged revision so that revisions never repeat
    local c = 0
    local top = redis.call('ZREVRANGE', L, 0, 0, 'WITHSCORES')
    if top[2] then c = tonumber(top[2]) end
    redis.call('HSET', V, 'epoch', ARGV[1], 'counter', c, 'oldest', c)
    return ARGV[1], c
  end
  return v[1], tonumber(v[2])
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function trim(now)
  local old = redis.call('ZRANGEBYSCORE', T, '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, 128)
  if #old == 0 then return end
  local top = tonumber(redis.call('HGET', V, 'oldest') or '0')
  for _, k in ipairs(old) do
    local s = redis.call('ZSCORE', L, k)
    if s and tonumber(s) > top then top = tonumber(s) end
    if redis.call('HEXISTS', E, k) == 0 then redis.call('ZREM', L, k) end
  end
  redis.call('ZREM', T, unpack(old))
  redis.call('HSET', V, 'oldest', top)
end
local function bump()
  local ep = current()
  return ep, redis.call('HINCRBY', V, 'counter', 1)
end
-- records a write of k at rev, expiring at exp (ms; nil: never)
local function wrote(k, rev, exp)
  redis.call('ZADD', L, rev, k)
  redis.call('ZREM', T, k)
  if exp then
    redis.call('ZADD', X, string.format('%d', exp), k)
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
local function rev_of(k)
  return tonumber(redis.call('ZSCORE', L, k) or '0')
end
-- the expiry of k in ms, or false (a nil in the reply) if it has none
local function exp_of(k)
  local s = redis.call('ZSCORE', X, k)
  return s and tonumber(s)
end
local function done(ep, rev)
  trim(now_ms())
  redis.call(ARGV[3], ARGV[4], rev)
  return {1, ep, rev}
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// `ARGV[5]` key, `ARGV[6]` value.
pub(crate) static PERSIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ep, rev = bump()
put(ARGV[5], ARGV[6], rev)
return done(ep, rev)
"#,
    )
});

/// `ARGV[5]` key, `ARGV[6]` value, `ARGV[7]` time to live in ms. Done: `{1, epoch, counter,
/// expiry}`.
pub(crate) static PERSIST_EXPIRING: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ep, rev = bump()
local exp = now_ms() + tonumber(ARGV[7])
put(ARGV[5], ARGV[6], rev, exp)
local r = done(ep, rev)
r[4] = exp
return r
"#,
    )
});

/// `ARGV[5]` key.
pub(crate) static DEPERSIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HEXISTS', E, ARGV[5]) == 0 then return {0} end
local ep, rev = bump()
del(ARGV[5], rev, now_ms())
return done(ep, rev)
"#,
    )
});

/// `ARGV[5]` key, `ARGV[6]` value. Present: `{0, value, revision, expiry or nil}`.
pub(crate) static INSERT_IF_ABSENT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cur = redis.call('HGET', E, ARGV[5])
if cur then return {0, cur, rev_of(ARGV[5]), exp_of(ARGV[5])} end
local ep, rev = bump()
put(ARGV[5], ARGV[6], rev)
return done(ep, rev)
"#,
    )
});

/// `ARGV[5]` key, `ARGV[6]` expected revision (empty: absent), `ARGV[7]` `1` to store
/// `ARGV[8]`, `0` to delete. Conflict: `{0}` (absent) or `{0, value, revision, expiry or nil}`.
pub(crate) static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local k = ARGV[5]
local cur = redis.call('HGET', E, k)
local currev = nil
if cur then currev = rev_of(k) end
local matches
if ARGV[6] == '' then matches = (cur == false) else matches = (cur ~= false and currev == tonumber(ARGV[6])) end
if (not matches) or (cur == false and ARGV[7] == '0') then
  if cur then return {0, cur, currev, exp_of(k)} end
  return {0}
end
local ep, rev = bump()
if ARGV[7] == '1' then put(k, ARGV[8], rev) else del(k, rev, now_ms()) end
return done(ep, rev)
"#,
    )
});

/// `ARGV[5]` key. Popped: `{1, epoch, counter, old value}`.
pub(crate) static POP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cur = redis.call('HGET', E, ARGV[5])
if not cur then return {0} end
local ep, rev = bump()
del(ARGV[5], rev, now_ms())
local r = done(ep, rev)
r[4] = cur
return r
"#,
    )
});

/// Shared by both layouts: adds `delta` to the ASCII decimal integer in hash `h` field `k`
/// exactly (HINCRBY: 64-bit, overflow checked), accepting what Rust's `i64` parser accepts
/// (`+5`, `007`) by normalising first. Returns the new value's text, or nil after restoring
/// the old value when it is not an integer or the result overflows.
pub(crate) const INCREMENT_FN: &str = r#"
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

/// `ARGV[5]` key, `ARGV[6]` delta. Not an integer: `{-1}`. Done: `{1, epoch, counter, new}`.
pub(crate) static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r#"{INCREMENT_FN}
local new = incr(E, ARGV[5], ARGV[6])
if not new then return {{-1}} end
local ep, rev = bump()
wrote(ARGV[5], rev)
local r = done(ep, rev)
r[4] = new
return r
"#
    ))
});

/// From `ARGV[5]`: triples (`P` key value | `D` key ``).
pub(crate) static BATCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local changes = false
for i = 5, #ARGV, 3 do
  if ARGV[i] == 'P' or redis.call('HEXISTS', E, ARGV[i + 1]) == 1 then
    changes = true
    break
  end
end
if not changes then return {0} end
local ep, rev = bump()
local now = now_ms()
for i = 5, #ARGV, 3 do
  if ARGV[i] == 'P' then put(ARGV[i + 1], ARGV[i + 2], rev) else del(ARGV[i + 1], rev, now) end
end
return done(ep, rev)
"#,
    )
});

/// Deletes every entry.
pub(crate) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('HLEN', E) == 0 then return {0} end
local ep, rev = bump()
local now = now_ms()
local keys = redis.call('HKEYS', E)
for _, k in ipairs(keys) do
  redis.call('ZADD', L, rev, k)
  redis.call('ZADD', T, now, k)
end
redis.call('DEL', E, X)
return done(ep, rev)
"#,
    )
});

/// Deletes the entries whose expiry is at or before the server's time, with one bump: at most
/// 10,000 per call, earliest first, so that one script never blocks the server for long (the
/// engine sweeps again while expired entries remain). Swept: `{1, epoch, counter, key...}`.
/// Members of the expiry index without an entry (possible only after a hand edit) are dropped
/// from it without a bump.
pub(crate) static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local swept = {}
local due = redis.call('ZRANGEBYSCORE', X, '-inf', string.format('%d', now), 'LIMIT', 0, 10000)
for _, k in ipairs(due) do
  if redis.call('HEXISTS', E, k) == 1 then swept[#swept + 1] = k else redis.call('ZREM', X, k) end
end
if #swept == 0 then return {0} end
local ep, rev = bump()
for _, k in ipairs(swept) do del(k, rev, now) end
local r = done(ep, rev)
for _, k in ipairs(swept) do r[#r + 1] = k end
return r
"#,
    )
});

/// The server's clock in ms, `{now}` (run with the dictionary's keys, so a cluster answers from
/// the node whose clock the dictionary's expiries use).
pub(crate) static NOW: LazyLock<Script> = LazyLock::new(|| script("return {now_ms()}"));

/// The current token, creating the version record if it is missing: `{epoch, counter}`.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ep, c = current()
return {ep, c}
"#,
    )
});

/// Trims every tombstone now and makes the current counter the oldest one served.
pub(crate) static FORGET_HISTORY: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ep, c = current()
local tombs = redis.call('ZRANGE', T, 0, -1)
for _, k in ipairs(tombs) do
  if redis.call('HEXISTS', E, k) == 0 then redis.call('ZREM', L, k) end
end
redis.call('DEL', T)
redis.call('HSET', V, 'oldest', c)
return {ep, c}
"#,
    )
});

/// `ARGV[5]` caller's epoch, `ARGV[6]` caller's counter, `ARGV[7]` most changes served.
/// Too old: `{0}`. Otherwise `{1, epoch, counter, (key, revision, value or nil, expiry or
/// nil)...}`.
pub(crate) static CHANGES: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ep, c = current()
local since = tonumber(ARGV[6])
local oldest = tonumber(redis.call('HGET', V, 'oldest') or '0')
if ep ~= ARGV[5] or since < oldest or since > c then return {0} end
local out = {1, ep, c}
if since == c then return out end
local from = '(' .. ARGV[6]
if redis.call('ZCOUNT', L, from, '+inf') > tonumber(ARGV[7]) then return {0} end
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

/// The first chunk of a full load, atomic with the token: `ARGV[5]` HSCAN cursor (`0`),
/// `ARGV[6]` COUNT hint. Later chunks are plain `HSCAN` pages, a `ZRANGE` walk of the log and
/// `ZSCAN` pages of the expiries (cheaper than passing every value through Lua), repaired
/// afterwards with the changes since the token.
/// `{epoch, counter, next cursor, (key, value, revision, expiry or nil)...}`.
pub(crate) static LOAD_CHUNK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ep, c = current()
local r = redis.call('HSCAN', E, ARGV[5], 'COUNT', ARGV[6])
local out = {ep, c, r[1]}
local kv = r[2]
if #kv == 0 then return out end
local ks = {}
for i = 1, #kv, 2 do ks[#ks + 1] = kv[i] end
local revs = redis.call('ZMSCORE', L, unpack(ks))
local exps = redis.call('ZMSCORE', X, unpack(ks))
for i = 1, #ks do
  out[#out + 1] = ks[i]
  out[#out + 1] = kv[2 * i]
  out[#out + 1] = tonumber(revs[i] or '0')
  out[#out + 1] = exps[i] and tonumber(exps[i])
end
return out
"#,
    )
});
