//! The log's record codec: what one state change of the hub looks like on disk.
//!
//! A record is framed as
//!
//! ```text
//! record  = len:u32le crc:u32le payload        ; len = bytes of payload (1 to MAX_RECORD)
//! payload = kind:u8 field*                     ; crc = CRC-32 (IEEE) of payload
//! str     = len:u32le utf8-bytes
//! bytes   = len:u32le bytes
//! opt<T>  = 0:u8 | 1:u8 T
//! ```
//!
//! and every integer is little-endian. `encode` appends one framed record to a buffer;
//! `frame` finds the next whole, checksummed record in a buffer (or says the rest is torn or
//! corrupt); `decode` turns a payload back into an owned `Replayed`. Decoding never panics on
//! any bytes: a short or malformed payload is `None`, which replay treats as corruption.

use std::collections::{BTreeMap, BTreeSet};

/// The largest payload a record may have: a message is at most `--max-message-bytes`, far
/// below this; a longer length field is corruption.
pub const MAX_RECORD: usize = 256 << 20;
/// The frame's own bytes: length and checksum.
pub const FRAME_HEAD: usize = 8;

const MESSAGE: u8 = 1;
const QUEUE: u8 = 2;
const CLOCK: u8 = 3;
const TRIM: u8 = 4;
const ADDRESS: u8 = 5;
const HEAD: u8 = 6;
const END: u8 = 7;
const STORE: u8 = 8;

/// One state change, borrowed from the hub for encoding.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// A message stored in a channel (with its `seq`).
    Message(MessageRecord<'a>),
    /// A channel's QST queue state after a change (it became a queue, an acknowledgement, a
    /// try counted, a message expired): the whole state, so replaying it twice is harmless.
    Queue {
        channel: &'a str,
        acked: u64,
        acked_id: Option<(u64, &'a str)>,
        done: &'a BTreeSet<u64>,
        tries: &'a BTreeMap<u64, u32>,
    },
    /// A channel's clock moved (comet `sync`, a subscription) to at least this.
    Clock { channel: &'a str, clock: u64 },
    /// Messages with `seq <= upto` that no queue holds were dropped (memory budget, TTL).
    Trim { channel: &'a str, upto: u64 },
    /// A QST v1 gateway reported its address.
    Address { account: &'a str, address: &'a str },
    /// A snapshot's channel: its clock, how far retention dropped, the last pushed id.
    Head {
        channel: &'a str,
        clock: u64,
        dropped: u64,
        last_id: Option<&'a str>,
    },
    /// The end of a snapshot, with how many records came before it.
    End { records: u64 },
    /// The whole Message item store and its users after a committed change (the store's
    /// own JSON export): the last one replayed is the store.
    Store { state: &'a [u8] },
}

/// A stored message's fields, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct MessageRecord<'a> {
    pub channel: &'a str,
    pub seq: u64,
    pub id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub when: i64,
    /// The hub's `Origin`, as a number (`hub::Origin::code`).
    pub origin: u8,
    pub subject: Option<&'a str>,
    pub body: &'a [u8],
    pub properties: &'a [(Box<str>, Box<str>)],
    /// nchan's publisher `Content-Type` and EventSource event name.
    pub content_type: Option<&'a str>,
    pub event: Option<&'a str>,
}

/// A record read back from disk, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    Message(StoredMessage),
    Queue(QueueState),
    Clock {
        channel: String,
        clock: u64,
    },
    Trim {
        channel: String,
        upto: u64,
    },
    Address {
        account: String,
        address: String,
    },
    Head {
        channel: String,
        clock: u64,
        dropped: u64,
        last_id: Option<String>,
    },
    End {
        records: u64,
    },
    Store {
        state: Vec<u8>,
    },
}

/// A message read back from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub channel: String,
    pub seq: u64,
    pub id: String,
    pub from: String,
    pub to: String,
    pub when: i64,
    pub origin: u8,
    pub subject: Option<String>,
    pub body: Vec<u8>,
    pub properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub event: Option<String>,
}

/// A queue's state read back from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueState {
    pub channel: String,
    pub acked: u64,
    pub acked_id: Option<(u64, String)>,
    pub done: BTreeSet<u64>,
    pub tries: BTreeMap<u64, u32>,
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// Appends one framed record to `out`; returns its length on disk.
pub fn encode(out: &mut Vec<u8>, rec: &Record<'_>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    match *rec {
        Record::Message(m) => {
            out.push(MESSAGE);
            put_str(out, m.channel);
            put_u64(out, m.seq);
            put_str(out, m.id);
            put_str(out, m.from);
            put_str(out, m.to);
            put_u64(out, m.when as u64);
            out.push(m.origin);
            put_opt_str(out, m.subject);
            put_bytes(out, m.body);
            put_u32(out, m.properties.len() as u32);
            for (k, v) in m.properties {
                put_str(out, k);
                put_str(out, v);
            }
            put_opt_str(out, m.content_type);
            put_opt_str(out, m.event);
        }
        Record::Queue {
            channel,
            acked,
            acked_id,
            done,
            tries,
        } => {
            out.push(QUEUE);
            put_str(out, channel);
            put_u64(out, acked);
            match acked_id {
                None => out.push(0),
                Some((seq, id)) => {
                    out.push(1);
                    put_u64(out, seq);
                    put_str(out, id);
                }
            }
            put_u32(out, done.len() as u32);
            for &seq in done {
                put_u64(out, seq);
            }
            put_u32(out, tries.len() as u32);
            for (&seq, &n) in tries {
                put_u64(out, seq);
                put_u32(out, n);
            }
        }
        Record::Clock { channel, clock } => {
            out.push(CLOCK);
            put_str(out, channel);
            put_u64(out, clock);
        }
        Record::Trim { channel, upto } => {
            out.push(TRIM);
            put_str(out, channel);
            put_u64(out, upto);
        }
        Record::Address { account, address } => {
            out.push(ADDRESS);
            put_str(out, account);
            put_str(out, address);
        }
        Record::Head {
            channel,
            clock,
            dropped,
            last_id,
        } => {
            out.push(HEAD);
            put_str(out, channel);
            put_u64(out, clock);
            put_u64(out, dropped);
            put_opt_str(out, last_id);
        }
        Record::End { records } => {
            out.push(END);
            put_u64(out, records);
        }
        Record::Store { state } => {
            out.push(STORE);
            put_bytes(out, state);
        }
    }
    let payload = &out[start + FRAME_HEAD..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + FRAME_HEAD].copy_from_slice(&crc);
    out.len() - start
}

/// What `frame` found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record whose checksum matches: its payload and its length on disk.
    Record(&'a [u8], usize),
    /// The buffer ends inside a record (or is empty): a torn write, or the end.
    Torn,
    /// A length out of range or a checksum that does not match.
    Corrupt,
}

/// The next record at the start of `buf`.
pub fn frame(buf: &[u8]) -> Frame<'_> {
    let Some(head) = buf.get(..FRAME_HEAD) else {
        return Frame::Torn;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_RECORD {
        return Frame::Corrupt;
    }
    let Some(payload) = buf.get(FRAME_HEAD..FRAME_HEAD + len) else {
        return Frame::Torn;
    };
    if crc32fast::hash(payload) != crc {
        return Frame::Corrupt;
    }
    Frame::Record(payload, FRAME_HEAD + len)
}

/// A cursor over a payload: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_string)
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    /// A count of items each at least `min` bytes long, checked against what is left (so a
    /// corrupt count cannot make a huge allocation).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min)? <= self.0.len()).then_some(n)
    }
}

/// Decodes a payload found by `frame`. `None`: not a record this version writes.
pub fn decode(payload: &[u8]) -> Option<Replayed> {
    let mut r = Reader(payload);
    let rec = match r.u8()? {
        MESSAGE => {
            let channel = r.string()?;
            let seq = r.u64()?;
            let id = r.string()?;
            let from = r.string()?;
            let to = r.string()?;
            let when = r.u64()? as i64;
            let origin = r.u8()?;
            let subject = r.opt_string()?;
            let body = r.bytes()?.to_vec();
            let n = r.count(8)?;
            let mut properties = Vec::with_capacity(n);
            for _ in 0..n {
                properties.push((r.string()?, r.string()?));
            }
            let content_type = r.opt_string()?;
            let event = r.opt_string()?;
            Replayed::Message(StoredMessage {
                channel,
                seq,
                id,
                from,
                to,
                when,
                origin,
                subject,
                body,
                properties,
                content_type,
                event,
            })
        }
        QUEUE => {
            let channel = r.string()?;
            let acked = r.u64()?;
            let acked_id = match r.u8()? {
                0 => None,
                1 => Some((r.u64()?, r.string()?)),
                _ => return None,
            };
            let n = r.count(8)?;
            let mut done = BTreeSet::new();
            for _ in 0..n {
                done.insert(r.u64()?);
            }
            let n = r.count(12)?;
            let mut tries = BTreeMap::new();
            for _ in 0..n {
                tries.insert(r.u64()?, r.u32()?);
            }
            Replayed::Queue(QueueState {
                channel,
                acked,
                acked_id,
                done,
                tries,
            })
        }
        CLOCK => Replayed::Clock {
            channel: r.string()?,
            clock: r.u64()?,
        },
        TRIM => Replayed::Trim {
            channel: r.string()?,
            upto: r.u64()?,
        },
        ADDRESS => Replayed::Address {
            account: r.string()?,
            address: r.string()?,
        },
        HEAD => Replayed::Head {
            channel: r.string()?,
            clock: r.u64()?,
            dropped: r.u64()?,
            last_id: r.opt_string()?,
        },
        END => Replayed::End { records: r.u64()? },
        STORE => Replayed::Store {
            state: r.bytes()?.to_vec(),
        },
        _ => return None,
    };
    // Trailing bytes mean the payload is not what this version wrote.
    r.0.is_empty().then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(rec: &StoredMessage) -> Vec<u8> {
        let props: Vec<(Box<str>, Box<str>)> = rec
            .properties
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect();
        let mut out = Vec::new();
        let r = MessageRecord {
            channel: &rec.channel,
            seq: rec.seq,
            id: &rec.id,
            from: &rec.from,
            to: &rec.to,
            when: rec.when,
            origin: rec.origin,
            subject: rec.subject.as_deref(),
            body: &rec.body,
            properties: &props,
            content_type: rec.content_type.as_deref(),
            event: rec.event.as_deref(),
        };
        encode(&mut out, &Record::Message(r));
        out
    }

    fn roundtrip(rec: &Record<'_>) -> Replayed {
        let mut out = Vec::new();
        let n = encode(&mut out, rec);
        assert_eq!(n, out.len());
        match frame(&out) {
            Frame::Record(payload, len) => {
                assert_eq!(len, out.len());
                decode(payload).expect("decodes")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let done: BTreeSet<u64> = [5, 7].into();
        let tries: BTreeMap<u64, u32> = [(8, 2)].into();
        assert_eq!(
            roundtrip(&Record::Queue {
                channel: "q",
                acked: 4,
                acked_id: Some((4, "m4")),
                done: &done,
                tries: &tries
            }),
            Replayed::Queue(QueueState {
                channel: "q".into(),
                acked: 4,
                acked_id: Some((4, "m4".into())),
                done,
                tries
            })
        );
        assert_eq!(
            roundtrip(&Record::Clock {
                channel: "c",
                clock: 9
            }),
            Replayed::Clock {
                channel: "c".into(),
                clock: 9
            }
        );
        assert_eq!(
            roundtrip(&Record::Trim {
                channel: "c",
                upto: 3
            }),
            Replayed::Trim {
                channel: "c".into(),
                upto: 3
            }
        );
        assert_eq!(
            roundtrip(&Record::Store {
                state: b"{\"items\": {}}"
            }),
            Replayed::Store {
                state: b"{\"items\": {}}".to_vec()
            }
        );
        assert_eq!(
            roundtrip(&Record::Address {
                account: "acme",
                address: "sms://1"
            }),
            Replayed::Address {
                account: "acme".into(),
                address: "sms://1".into()
            }
        );
        assert_eq!(
            roundtrip(&Record::Head {
                channel: "c",
                clock: 1,
                dropped: 0,
                last_id: None
            }),
            Replayed::Head {
                channel: "c".into(),
                clock: 1,
                dropped: 0,
                last_id: None
            }
        );
        assert_eq!(
            roundtrip(&Record::End { records: 12 }),
            Replayed::End { records: 12 }
        );
    }

    #[test]
    fn torn_and_corrupt_frames_are_told_apart() {
        let mut out = Vec::new();
        encode(
            &mut out,
            &Record::Clock {
                channel: "c",
                clock: 1,
            },
        );
        for cut in 0..out.len() {
            assert_eq!(frame(&out[..cut]), Frame::Torn, "cut at {cut}");
        }
        let last = out.len() - 1;
        out[last] ^= 1;
        assert_eq!(frame(&out), Frame::Corrupt);
        assert_eq!(frame(&[0; 8]), Frame::Corrupt, "a zero length");
        assert_eq!(frame(&[0xff; 16]), Frame::Corrupt, "a huge length");
    }

    fn stored() -> impl Strategy<Value = StoredMessage> {
        (
            (".{0,20}", any::<u64>(), ".{0,40}", ".{0,10}", ".{0,10}"),
            (
                any::<i64>(),
                0..6u8,
                proptest::option::of(".{0,10}"),
                proptest::collection::vec(any::<u8>(), 0..200),
                proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
                proptest::option::of(".{0,10}"),
                proptest::option::of(".{0,10}"),
            ),
        )
            .prop_map(
                |(
                    (channel, seq, id, from, to),
                    (when, origin, subject, body, properties, content_type, event),
                )| {
                    StoredMessage {
                        channel,
                        seq,
                        id,
                        from,
                        to,
                        when,
                        origin,
                        subject,
                        body,
                        properties,
                        content_type,
                        event,
                    }
                },
            )
    }

    proptest! {
        /// Any message encodes and decodes back to itself.
        #[test]
        fn messages_round_trip(m in stored()) {
            let out = message(&m);
            let Frame::Record(payload, len) = frame(&out) else {
                return Err(TestCaseError::fail("no frame"));
            };
            prop_assert_eq!(len, out.len());
            prop_assert_eq!(decode(payload), Some(Replayed::Message(m)));
        }

        /// Any bytes at all: `frame` and `decode` answer without panicking, and a frame that
        /// was damaged anywhere is never taken for a different record.
        #[test]
        fn damage_is_detected(m in stored(), at in any::<usize>(), bit in 0..8u8) {
            let mut out = message(&m);
            let i = at % out.len();
            out[i] ^= 1 << bit;
            match frame(&out) {
                Frame::Record(payload, _) => {
                    // A flipped length bit can only shorten the frame; a flip in the
                    // payload must fail the checksum. Either way it is not the message.
                    prop_assert_ne!(decode(payload), Some(Replayed::Message(m)));
                }
                Frame::Torn | Frame::Corrupt => {}
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let _ = frame(&bytes);
        }
    }
}
