//! The Lua scripts that change a channel in Redis, and the keys they use.
//!
//! Each script runs atomically in Redis, so every change of a channel by any node is one
//! step in one order: that is what makes `seq` one id space and acknowledgement race-free.
//!
//! Keys of channel `C` (all share the hash tag `{C}`, so they live in one cluster slot; a
//! name holding `}` still maps every key of `C` to the same tag):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tidings:{C}` | hash | `clock` (last seq handed out), `bytes` (of retained data), `dropped` (highest seq trimmed away); for a queue also `q` (=1), `acked` (cursor), `acked_seq`/`acked_id` (the `ETag` of an empty pull) |
//! | `tidings:{C}:log` | stream | one entry per message, id `SEQ-0`, fields `i` (message id) and `d` (the hub's encoded message) |
//! | `tidings:{C}:ids` | hash | queue only: message id → seq, for every message in the log (duplicate pushes, `etag` and v1 ids) |
//! | `tidings:{C}:seqs` | zset | queue only: the seqs in the log (score = seq): range counts in O(log n) |
//! | `tidings:{C}:done` | zset | queue only: seqs above the cursor that left one by one (v1 confirmed or failed, expired) |
//! | `tidings:{C}:tries` | hash | queue only: seq → deliveries, for seqs above the cursor |
//!
//! The pub/sub topic of `C` is `tidings:{C}` too (topics and keys are separate namespaces).
//! A notification is `SEQ SP IDLEN SP ID DATA`: the whole message, so a node fans it out
//! without reading it back.
//!
//! Why a stream: entries are ordered by an id we choose (`SEQ-0`), so "everything after seq
//! S" is one `XRANGE` from `S+1`, an entry holds the message id beside the data, and trimming
//! from the old end is O(1) per entry. A sorted set would need the seq inside each member to
//! keep equal payloads apart; a list cannot be read from a seq without a scan.
//!
//! `now_ms` is Redis's `TIME`, read inside the script: every node then draws seqs from one
//! clock, so a node whose clock runs ahead cannot push a channel's clock (and every later
//! seq) into its future, and one behind cannot make seqs lag the wall clock; the seq still
//! only grows if Redis's clock steps back (`clock + 1`). Redis 7 replicates a script's
//! effects, not the script, so `TIME` is allowed before writes.
//!
//! Every script takes the pub/sub command (`SPUBLISH` or `PUBLISH`) as `ARGV[1]`, whether it
//! publishes or not, so the engine calls them all alike.

use std::sync::OnceLock;

use sha1::{Digest, Sha1};

/// A script's source and its SHA-1 (what `EVALSHA` names it by).
pub struct Script {
    pub name: &'static str,
    pub src: &'static str,
    /// The SHA-1, worked out once (every `EVALSHA` names the script by it: hashing the
    /// source each time was a third of the engine thread's time under `wrk`).
    sha: OnceLock<String>,
}

impl Script {
    pub const fn new(name: &'static str, src: &'static str) -> Script {
        Script {
            name,
            src,
            sha: OnceLock::new(),
        }
    }

    /// The hex SHA-1 of the source, as `SCRIPT LOAD` would answer.
    pub fn sha(&self) -> &str {
        self.sha.get_or_init(|| {
            let d = Sha1::digest(self.src.as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect()
        })
    }
}

/// Functions shared by the scripts: the clock, trimming and queue bookkeeping.
macro_rules! prelude {
    () => {
        r#"
local function seq_of(id) return tonumber(string.match(id, '^(%d+)')) end
local function fmt(n) return string.format('%d', n) end

-- Appends a stream entry to an answer as `seq, id, data`.
local function push_entry(out, e)
  out[#out + 1] = seq_of(e[1])
  out[#out + 1] = e[2][2]
  out[#out + 1] = e[2][4]
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The channel's clock; a missing one is rebuilt from the log's last entry.
local function clock_of(meta, log)
  local c = redis.call('HGET', meta, 'clock')
  if c then return tonumber(c) end
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
  if last then return seq_of(last[1]) end
  return 0
end

local function is_queue(meta) return redis.call('HEXISTS', meta, 'q') == 1 end
local function acked_of(meta) return tonumber(redis.call('HGET', meta, 'acked') or '0') end

-- Makes the channel a queue holding every message of its log.
local function make_queue(meta, log, ids, seqs)
  redis.call('HSET', meta, 'q', 1, 'acked', 0)
  local from = '-'
  while true do
    local es = redis.call('XRANGE', log, from, '+', 'COUNT', 256)
    if #es == 0 then break end
    for _, e in ipairs(es) do
      local s = seq_of(e[1])
      redis.call('HSET', ids, e[2][2], fmt(s))
      redis.call('ZADD', seqs, s, fmt(s))
      from = fmt(s + 1) .. '-0'
    end
  end
end

-- Messages a pull would return: in the log above the cursor, not done.
local function pending_count(meta, seqs, done)
  return redis.call('ZCOUNT', seqs, '(' .. fmt(acked_of(meta)), '+inf') - redis.call('ZCARD', done)
end

-- Drops the oldest messages while over the count or byte budget, or older than `ttl` ms
-- before `now` (0: no age limit); a queue's unacknowledged messages (above `acked`) are
-- never dropped. Takes what the caller knows (no call to read it again) and returns the
-- retained bytes left and the highest seq dropped (nil: none).
local function trim(log, ids, seqs, cap, cap_bytes, ttl, now, queue, acked, bytes)
  local dropped = nil
  local oldest_kept = 0
  if ttl > 0 then oldest_kept = now - ttl end
  while true do
    local len = redis.call('XLEN', log)
    if len == 0 then break end
    if len <= cap and bytes <= cap_bytes and ttl == 0 then break end
    local e = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
    local s = seq_of(e[1])
    if len <= cap and bytes <= cap_bytes and s >= oldest_kept then break end
    if queue and s > acked then break end
    redis.call('XDEL', log, e[1])
    bytes = bytes - #e[2][4]
    dropped = s
    if queue then
      if redis.call('HGET', ids, e[2][2]) == fmt(s) then redis.call('HDEL', ids, e[2][2]) end
      redis.call('ZREM', seqs, fmt(s))
    end
  end
  return bytes, dropped
end

-- Moves the cursor to seq s, forgetting per-message state at or below it.
local function advance(meta, done, tries, s)
  redis.call('HSET', meta, 'acked', fmt(s))
  redis.call('ZREMRANGEBYSCORE', done, '-inf', s)
  local t = redis.call('HKEYS', tries)
  for _, k in ipairs(t) do
    if tonumber(k) <= s then redis.call('HDEL', tries, k) end
  end
end

-- Remembers an acknowledged message for the ETag of an empty pull (never moves back).
local function note_acked(meta, s, id)
  local cur = tonumber(redis.call('HGET', meta, 'acked_seq') or '0')
  if s > cur then redis.call('HSET', meta, 'acked_seq', fmt(s), 'acked_id', id) end
end

-- Moves the cursor over a leading run of messages that left one by one.
local function compact(meta, seqs, done, tries)
  local acked = acked_of(meta)
  local last = nil
  while true do
    local nxt = redis.call('ZRANGEBYSCORE', seqs, '(' .. fmt(acked), '+inf', 'LIMIT', 0, 1)[1]
    if not nxt or not redis.call('ZSCORE', done, nxt) then break end
    acked = tonumber(nxt)
    last = acked
  end
  if last then advance(meta, done, tries, last) end
end

-- Up to `limit` pending seqs above `after`, oldest first.
local function pending_after(seqs, done, after, limit)
  local out = {}
  local cursor = '(' .. fmt(after)
  while #out < limit do
    local batch = redis.call('ZRANGEBYSCORE', seqs, cursor, '+inf', 'LIMIT', 0, limit - #out + 8)
    if #batch == 0 then break end
    for _, s in ipairs(batch) do
      cursor = '(' .. s
      if not redis.call('ZSCORE', done, s) then
        out[#out + 1] = tonumber(s)
        if #out == limit then break end
      end
    end
  end
  return out
end
"#
    };
}

/// A script: the prelude, then its own body.
macro_rules! script {
    ($name:literal, $body:literal) => {
        Script::new($name, concat!(prelude!(), $body))
    };
}

/// Stores messages: `KEYS` = meta, log, ids, seqs, done; `ARGV` = pubcmd, topic, count cap,
/// byte cap, queue cap, make-queue (`0`/`1`), age cap in ms (`0`: none), then `id, data`
/// pairs.
///
/// Each message gets `seq = max(now_ms, clock + 1)` and is published on `topic` after it
/// is stored. On a queue, a message whose id the log already holds is not stored again (its
/// seq is answered, flagged old), and a batch that would take the pending count past the
/// queue cap stores nothing. Answers `{0, seq1, new1, seq2, new2, …}`, or `{1, pending}`
/// when the queue is full.
pub static PUBLISH: Script = script!(
    "publish",
    r#"
local meta, log, ids, seqs, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local pubcmd, topic = ARGV[1], ARGV[2]
local cap, cap_bytes, qcap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl = tonumber(ARGV[7])
-- Every field of the channel this needs, in one call (each call costs about as much as
-- the work it does: this script is the price of a publish).
local h = redis.call('HMGET', meta, 'q', 'clock', 'bytes', 'acked', 'deleted', 'aged')
local queue = h[1] ~= false
if ARGV[6] == '1' and not queue then
  make_queue(meta, log, ids, seqs)
  queue = true
end
if queue then
  local fresh = 0
  local seen = {}
  for i = 8, #ARGV, 2 do
    if not seen[ARGV[i]] and not redis.call('HGET', ids, ARGV[i]) then fresh = fresh + 1 end
    seen[ARGV[i]] = true
  end
  local pending = pending_count(meta, seqs, done)
  if fresh > 0 and pending + fresh > qcap then return {1, pending} end
end
local now = now_ms()
local clock = tonumber(h[2]) or clock_of(meta, log)
local bytes = tonumber(h[3] or '0')
local out = {0}
for i = 8, #ARGV, 2 do
  local id, data = ARGV[i], ARGV[i + 1]
  local old = queue and redis.call('HGET', ids, id)
  if old then
    out[#out + 1] = tonumber(old)
    out[#out + 1] = 0
  else
    local seq = math.max(now, clock + 1)
    clock = seq
    redis.call('XADD', log, fmt(seq) .. '-0', 'i', id, 'd', data)
    bytes = bytes + #data
    if queue then
      redis.call('HSET', ids, id, fmt(seq))
      redis.call('ZADD', seqs, seq, fmt(seq))
    end
    redis.call(pubcmd, topic, fmt(seq) .. ' ' .. #id .. ' ' .. id .. data)
    out[#out + 1] = seq
    out[#out + 1] = 1
  end
end
local acked = tonumber(h[4] or '0')
-- The age cap is applied (and the channel's expiry pushed back) at most every tenth of it,
-- and at most every second: not at every publish of a busy channel, where it would cost an
-- `XRANGE` and two `PEXPIRE`s each time. So a message may outlive the cap, and a channel
-- expire before it, by that much (readers skip what is older: `READ`).
local aged = tonumber(h[6] or '0')
local age_now = ttl > 0 and now - aged >= math.min(1000, math.floor(ttl / 10))
local age_cap = 0
if age_now then age_cap = ttl end
local dropped
bytes, dropped = trim(log, ids, seqs, cap, cap_bytes, age_cap, now, queue, acked, bytes)
local fields = {'clock', fmt(clock), 'bytes', fmt(bytes)}
if dropped then
  fields[#fields + 1] = 'dropped'
  fields[#fields + 1] = fmt(dropped)
end
if age_now then
  fields[#fields + 1] = 'aged'
  fields[#fields + 1] = fmt(now)
end
redis.call('HSET', meta, unpack(fields))
if h[5] then redis.call('HDEL', meta, 'deleted') end
-- A channel that is not a queue expires with its last message.
if age_now and not queue then
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', log, ttl)
end
return out
"#
);

/// Comet `sync`: `KEYS` = meta, log; `ARGV` = pubcmd. Sets the clock to
/// `max(clock, now_ms)` and answers it: every later seq is above it.
pub static SYNC_CLOCK: Script = script!(
    "sync_clock",
    r#"
local meta, log = KEYS[1], KEYS[2]
local clock = math.max(clock_of(meta, log), now_ms())
redis.call('HSET', meta, 'clock', fmt(clock))
return clock
"#
);

/// Catch-up read: `KEYS` = meta, log; `ARGV` = pubcmd, after, max, and optionally an age
/// cap in ms (older messages are not read: they expire at the next publish). Answers
/// `{clock, dropped, last_id, seq1, id1, data1, …}`: the first `max` messages with
/// `seq > after`, with the channel's clock, the highest seq trimmed away (above `after`: a
/// gap) and the id of the newest message (empty: none).
pub static READ: Script = script!(
    "read",
    r#"
local meta, log = KEYS[1], KEYS[2]
local after, max = tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl = tonumber(ARGV[4] or '0')
if ttl > 0 then after = math.max(after, now_ms() - ttl - 1) end
local newest = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
local out = {clock_of(meta, log), tonumber(redis.call('HGET', meta, 'dropped') or '0'),
  newest and newest[2][2] or ''}
for _, e in ipairs(redis.call('XRANGE', log, fmt(after + 1) .. '-0', '+', 'COUNT', max)) do
  push_entry(out, e)
end
return out
"#
);

/// QST pull: `KEYS` = meta, log, ids, seqs, done, tries; `ARGV` = pubcmd, max, max tries
/// (0: no cap). Makes the channel a queue if it is not one; first, when tries are capped,
/// the pending messages at the head already tried that often leave as expired; then answers
/// the first `max` pending messages, counting a try for each when capped:
/// `{acked_id, expired, pending, seq1, id1, data1, …}` (`pending` after the expiry, those
/// returned included).
pub static TAKE: Script = script!(
    "take",
    r#"
local meta, log, ids, seqs, done, tries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local max, max_tries = tonumber(ARGV[2]), tonumber(ARGV[3])
if not is_queue(meta) then make_queue(meta, log, ids, seqs) end
local expired = 0
if max_tries > 0 then
  while true do
    local h = pending_after(seqs, done, acked_of(meta), 1)[1]
    if not h or tonumber(redis.call('HGET', tries, fmt(h)) or '0') < max_tries then break end
    redis.call('ZADD', done, h, fmt(h))
    expired = expired + 1
    compact(meta, seqs, done, tries)
  end
end
local out = {redis.call('HGET', meta, 'acked_id') or '', expired, pending_count(meta, seqs, done)}
for _, s in ipairs(pending_after(seqs, done, acked_of(meta), max)) do
  local e = redis.call('XRANGE', log, fmt(s) .. '-0', fmt(s) .. '-0')[1]
  if e then
    push_entry(out, e)
    if max_tries > 0 then redis.call('HINCRBY', tries, fmt(s), 1) end
  end
end
return out
"#
);

/// QST acknowledgement: `KEYS` = meta, log, ids, seqs, done, tries; `ARGV` = pubcmd, upto id
/// (empty: none), the number of confirmed ids, the confirmed ids, then the failed ids.
///
/// `upto` acknowledges every message up to and including its own; a confirmed or failed id
/// takes its message out of the queue alone. Unknown ids, and ids at or below the cursor,
/// change nothing, so a repeated or late acknowledgement can never count a message twice,
/// and a message can never come back once acknowledged. On a channel that is not a queue
/// nothing changes. Answers `{acked, failed, pending, acked_id}`.
pub static ACK: Script = script!(
    "ack",
    r#"
local meta, log, ids, seqs, done, tries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if not is_queue(meta) then return {0, 0, 0, ''} end
local acked_n, failed_n = 0, 0
local upto = ARGV[2]
if upto ~= '' then
  local s = tonumber(redis.call('HGET', ids, upto) or '0')
  local acked = acked_of(meta)
  if s > acked then
    local newly = redis.call('ZCOUNT', seqs, '(' .. fmt(acked), s)
      - redis.call('ZCOUNT', done, '(' .. fmt(acked), s)
    acked_n = acked_n + newly
    note_acked(meta, s, upto)
    advance(meta, done, tries, s)
  end
end
local nconf = tonumber(ARGV[3])
for i = 4, #ARGV do
  local id = ARGV[i]
  local s = tonumber(redis.call('HGET', ids, id) or '0')
  if s > acked_of(meta) and redis.call('ZADD', done, 'NX', s, fmt(s)) == 1 then
    if i < 4 + nconf then
      acked_n = acked_n + 1
      note_acked(meta, s, id)
    else
      failed_n = failed_n + 1
    end
  end
end
compact(meta, seqs, done, tries)
return {acked_n, failed_n, pending_count(meta, seqs, done), redis.call('HGET', meta, 'acked_id') or ''}
"#
);

/// nchan's `DELETE`: `KEYS` = meta, log; `ARGV` = pubcmd, topic. Drops every retained
/// message of a channel that is not a queue (its clock stays, so seqs keep growing, with
/// `deleted` set until the next publish) and tells every node with the notification `0 0 `
/// (seq 0: no message has it). Answers `{0, messages dropped}`, `{1}` for a channel Redis
/// does not hold or that is deleted already, `{2}` for a queue (its messages leave only by
/// acknowledgement).
pub static DELETE: Script = script!(
    "delete",
    r#"
local meta, log = KEYS[1], KEYS[2]
local pubcmd, topic = ARGV[1], ARGV[2]
if is_queue(meta) then return {2} end
if redis.call('EXISTS', meta) == 0 and redis.call('EXISTS', log) == 0 then return {1} end
if redis.call('HGET', meta, 'deleted') == '1' then return {1} end
local n = redis.call('XLEN', log)
local clock = clock_of(meta, log)
redis.call('DEL', log)
redis.call('HSET', meta, 'clock', fmt(clock), 'bytes', 0, 'dropped', fmt(clock), 'deleted', 1)
redis.call(pubcmd, topic, '0 0 ')
return {0, n}
"#
);

/// Every script, for loading them at connect.
pub static ALL: [&Script; 6] = [&PUBLISH, &SYNC_CLOCK, &READ, &TAKE, &ACK, &DELETE];

/// The keys of channel `name`, in the order the scripts take them: meta, log, ids, seqs,
/// done, tries.
pub fn keys(name: &str) -> [String; 6] {
    let meta = format!("tidings:{{{name}}}");
    let key = |suffix: &str| format!("{meta}:{suffix}");
    [
        meta.clone(),
        key("log"),
        key("ids"),
        key("seqs"),
        key("done"),
        key("tries"),
    ]
}

/// The pub/sub topic of channel `name`.
pub fn topic(name: &str) -> String {
    format!("tidings:{{{name}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_hash_tag() {
        let k = keys("acme/in");
        assert_eq!(
            k,
            [
                "tidings:{acme/in}",
                "tidings:{acme/in}:log",
                "tidings:{acme/in}:ids",
                "tidings:{acme/in}:seqs",
                "tidings:{acme/in}:done",
                "tidings:{acme/in}:tries",
            ]
        );
        assert_eq!(topic("x"), "tidings:{x}");
    }

    #[test]
    fn shas_are_sha1_hex() {
        let s = Script::new("t", "return 1");
        // `redis-cli SCRIPT LOAD "return 1"`
        assert_eq!(s.sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
