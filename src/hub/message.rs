//! The message: what every protocol stores into and reads out of a channel.
//!
//! A message is immutable once stored and shared (`Arc<Message>`) by every connection that
//! delivers it. Its encoded forms (a Talk record, a comet JSON object) are made at most once
//! per message and wire format, and cached beside it in its `Renders`, so a fan-out to N
//! subscribers renders once, not N times.

use std::sync::{Arc, OnceLock};

/// A wire form of a single message that is rendered once and shared by every connection
/// that sends it. A new protocol that frames messages one by one (SSE, WebSocket, XMPP) adds
/// a variant here, to `Format::ALL`, and renders through `Message::rendered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A Talk record terminated by NUL.
    TalkNul,
    /// A Talk record terminated by a newline.
    TalkNewline,
    /// The comet `{"time":…,"data":…}` object.
    CometJson,
    /// The shared tail of an XMPP PubSub event `<message>` (after its per-session `to`).
    XmppEvent,
    /// nchan's EventSource event (`id:`, `data:` lines).
    EventSource,
    /// nchan's HTTP chunked subscriber: the body as one chunk.
    Chunk,
    /// nchan's multipart/mixed part, up to and with the next boundary.
    MultipartPart,
    /// nchan's WebSocket frame of a message.
    WsPlain,
    /// nchan's WebSocket frame in `ws+meta.nchan` mode (id and content type first).
    WsMeta,
}

impl Format {
    /// Every format, in slot order.
    pub const ALL: [Format; 9] = [
        Format::TalkNul,
        Format::TalkNewline,
        Format::CometJson,
        Format::XmppEvent,
        Format::EventSource,
        Format::Chunk,
        Format::MultipartPart,
        Format::WsPlain,
        Format::WsMeta,
    ];

    fn slot(self) -> usize {
        self as usize
    }
}

/// One render slot: `None` when the message cannot be sent in that format (a Talk body that
/// holds the terminator), so the check is not repeated per connection either.
type Slot = OnceLock<Option<Arc<[u8]>>>;

/// The rendered forms of one message, one slot per `Format`.
///
/// Thread-safe and lock-free to read: messages are shared by every worker. The slot table
/// is allocated on the first render (a queued QST message, pulled as a batch and never
/// framed alone, never pays for it), and a message costs 16 bytes here until then. Each
/// slot renders at most once: a second thread asking for the same format while the first
/// renders waits for its bytes.
#[derive(Debug, Default)]
pub struct Renders {
    slots: OnceLock<Box<[Slot; Format::ALL.len()]>>,
}

impl Renders {
    /// The message in `format`, rendered by `render` if no thread did so before.
    pub fn get_or_render(
        &self,
        format: Format,
        render: impl FnOnce() -> Option<Arc<[u8]>>,
    ) -> Option<Arc<[u8]>> {
        let slots = self
            .slots
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        slots[format.slot()].get_or_init(render).clone()
    }
}

/// Which protocol accepted a message. Talk uses it to decide whether `to` names a Talk
/// stream (a Talk push) or some other kind of address (`sms://…` from a QST gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Talk,
    Qst,
    Comet,
    /// Published by a program embedding tidings, through its `Handle`.
    Embedded,
    /// Published by the Message item store: a committed change (PROTOCOLS.md 4.3).
    Store,
    /// Published by an XMPP PubSub publish: the body is the item's XML payload (4.4).
    Xmpp,
    /// Published on nchan's `/pub/` (PROTOCOLS.md 5).
    Nchan,
    /// Published by the server itself on a reserved channel (the status page's snapshots).
    Server,
}

impl Origin {
    /// In the order of their numbers in the durable log: a new origin goes at the end.
    const ALL: [Origin; 8] = [
        Origin::Talk,
        Origin::Qst,
        Origin::Comet,
        Origin::Embedded,
        Origin::Store,
        Origin::Xmpp,
        Origin::Nchan,
        Origin::Server,
    ];

    /// Its number in the durable log.
    pub fn code(self) -> u8 {
        Origin::ALL.iter().position(|&o| o == self).unwrap_or(0) as u8
    }

    /// The origin a log number names (an unknown number reads as `Embedded`).
    pub fn from_code(code: u8) -> Origin {
        Origin::ALL
            .get(code as usize)
            .copied()
            .unwrap_or(Origin::Embedded)
    }
}

/// A message as a client submitted it, before the hub stores it.
///
/// Fields the client left out stay empty here: the hub fills `id` (a new globally unique id)
/// and `when` (the time it accepted the message) when it stores the draft.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    pub id: Option<String>,
    pub from: String,
    pub to: String,
    /// Seconds since the Unix epoch, UTC.
    pub when: Option<i64>,
    pub subject: Option<String>,
    pub body: Vec<u8>,
    /// Ordered multimap: a name may repeat, and order is kept.
    pub properties: Vec<(String, String)>,
    /// The publisher's `Content-Type` (nchan's `/pub/`), verbatim.
    pub content_type: Option<String>,
    /// The EventSource event name (nchan's `X-EventSource-Event`).
    pub event: Option<String>,
}

impl Draft {
    /// A draft with only a body, as Talk and comet make them.
    pub fn with_body(body: impl Into<Vec<u8>>) -> Draft {
        Draft {
            body: body.into(),
            ..Draft::default()
        }
    }

    /// Bytes this message holds, as counted against retention budgets.
    pub fn size(&self) -> usize {
        self.id.as_ref().map_or(0, |s| s.len())
            + self.from.len()
            + self.to.len()
            + self.subject.as_ref().map_or(0, |s| s.len())
            + self.body.len()
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.content_type.as_ref().map_or(0, |s| s.len())
            + self.event.as_ref().map_or(0, |s| s.len())
    }
}

/// What a message says about its own bytes, when its publisher said it (nchan's `/pub/`):
/// boxed behind one pointer, so the messages of other protocols pay 8 bytes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub content_type: Option<Box<str>>,
    pub event: Option<Box<str>>,
}

/// A short string held inline up to `N` bytes and boxed beyond: message ids (`Id`, which
/// holds the 36-byte UUID-shaped ids the server makes and most client ids) and addresses
/// (`Address`: `sms://5550001`, a Talk name) without a heap allocation of their own. Reads as
/// a `str` (`Deref`), compares with `str` and `String`.
#[derive(Clone)]
pub struct SmallStr<const N: usize>(Repr<N>);

/// A message id: 40 bytes, inline up to 38.
pub type Id = SmallStr<38>;
/// A `from` or `to` address: 24 bytes, inline up to 22.
pub type Address = SmallStr<22>;

#[derive(Clone)]
enum Repr<const N: usize> {
    /// `bytes[..len]` is always a whole `str`, copied from one in `SmallStr::new`.
    Inline {
        len: u8,
        bytes: [u8; N],
    },
    Boxed(Box<str>),
}

impl Id {
    /// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` (lower-case hex, held inline) for the id prefix
    /// `p`, counter `n` and hash `r`: `p`'s bits first, the variant bits, then `n` mixed with
    /// `r`. The server's own ids (`Hub::new_id`).
    pub fn uuid_shaped(p: u64, n: u64, r: u64) -> Id {
        fn hex(out: &mut [u8], mut v: u64) {
            for d in out.iter_mut().rev() {
                *d = b"0123456789abcdef"[(v & 15) as usize];
                v >>= 4;
            }
        }
        let mut bytes = [0; 38];
        bytes[..36].fill(b'-');
        hex(&mut bytes[0..8], p >> 32);
        hex(&mut bytes[9..13], (p >> 16) & 0xffff);
        bytes[14] = b'4';
        hex(&mut bytes[15..18], p & 0xfff);
        hex(&mut bytes[19..23], 0x8000 | ((r >> 48) & 0x3fff));
        hex(&mut bytes[24..36], (n ^ (r << 24)) & 0xffff_ffff_ffff);
        // ASCII only: a whole `str`, as `Repr::Inline` requires.
        SmallStr(Repr::Inline { len: 36, bytes })
    }
}

impl<const N: usize> SmallStr<N> {
    /// The longest string held inline.
    pub const INLINE: usize = N;

    pub fn new(s: &str) -> SmallStr<N> {
        if s.len() <= N && N <= u8::MAX as usize {
            let mut bytes = [0; N];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            SmallStr(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            SmallStr(Repr::Boxed(s.into()))
        }
    }

    /// The bytes, without the UTF-8 check `as_str` makes: what comparisons use.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Boxed(s) => s.as_bytes(),
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Never falls back: the inline bytes were copied from a `str`, whole.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            Repr::Boxed(s) => s,
        }
    }
}

impl<const N: usize> From<String> for SmallStr<N> {
    fn from(s: String) -> SmallStr<N> {
        if s.len() <= N {
            SmallStr::new(&s)
        } else {
            SmallStr(Repr::Boxed(s.into_boxed_str()))
        }
    }
}

impl<const N: usize> From<&str> for SmallStr<N> {
    fn from(s: &str) -> SmallStr<N> {
        SmallStr::new(s)
    }
}

impl<const N: usize> Default for SmallStr<N> {
    fn default() -> SmallStr<N> {
        SmallStr::new("")
    }
}

impl<const N: usize> std::ops::Deref for SmallStr<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> AsRef<str> for SmallStr<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq for SmallStr<N> {
    fn eq(&self, other: &SmallStr<N>) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for SmallStr<N> {}

impl<const N: usize> std::hash::Hash for SmallStr<N> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl<const N: usize> PartialEq<str> for SmallStr<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> PartialEq<&str> for SmallStr<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> PartialEq<String> for SmallStr<N> {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> std::fmt::Debug for SmallStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> std::fmt::Display for SmallStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored message. `seq` is unique and strictly increasing within its channel.
///
/// Laid out for the many that wait in queues: boxed slices instead of growable strings and
/// vectors (no spare capacity, 16 bytes a field), the id and short addresses inline, one
/// render cache.
#[derive(Debug)]
pub struct Message {
    pub seq: u64,
    pub id: Id,
    pub from: Address,
    pub to: Address,
    /// Seconds since the Unix epoch, UTC.
    pub when: i64,
    pub subject: Option<Box<str>>,
    pub body: Box<[u8]>,
    /// Ordered multimap: a name may repeat, and order is kept.
    pub properties: Box<[(Box<str>, Box<str>)]>,
    pub origin: Origin,
    /// Content type and EventSource event name, if the publisher gave them.
    pub media: Option<Box<Media>>,
    /// Cached renders, one per wire format that delivers this message (see module doc).
    renders: Renders,
}

impl Message {
    /// Makes a stored message from a draft whose `id` and `when` are already decided.
    pub fn new(seq: u64, id: String, when: i64, origin: Origin, draft: Draft) -> Message {
        Message::with_id(seq, Id::from(id), when, origin, draft)
    }

    /// `new` with the id already in the form a message holds.
    pub fn with_id(seq: u64, id: Id, when: i64, origin: Origin, draft: Draft) -> Message {
        Message {
            seq,
            id,
            from: Address::from(draft.from),
            to: Address::from(draft.to),
            when,
            subject: draft.subject.map(String::into_boxed_str),
            body: draft.body.into_boxed_slice(),
            properties: draft
                .properties
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
            origin,
            media: (draft.content_type.is_some() || draft.event.is_some()).then(|| {
                Box::new(Media {
                    content_type: draft.content_type.map(String::into_boxed_str),
                    event: draft.event.map(String::into_boxed_str),
                })
            }),
            renders: Renders::default(),
        }
    }

    /// The publisher's content type, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.media.as_ref()?.content_type.as_deref()
    }

    /// The EventSource event name, if any.
    pub fn event(&self) -> Option<&str> {
        self.media.as_ref()?.event.as_deref()
    }

    /// This message in `format`: rendered by `render` the first time any thread asks, then
    /// the same shared bytes every time. `None` when `render` found that the message cannot
    /// be sent in that format.
    pub fn rendered(
        &self,
        format: Format,
        render: impl FnOnce(&Message) -> Option<Arc<[u8]>>,
    ) -> Option<Arc<[u8]>> {
        self.renders.get_or_render(format, || render(self))
    }

    /// The message back as a draft with every field set (used by tests and re-encoding).
    pub fn to_draft(&self) -> Draft {
        Draft {
            id: Some(self.id.to_string()),
            from: self.from.to_string(),
            to: self.to.to_string(),
            when: Some(self.when),
            subject: self.subject.as_deref().map(str::to_string),
            body: self.body.to_vec(),
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            content_type: self.content_type().map(str::to_string),
            event: self.event().map(str::to_string),
        }
    }

    /// Bytes this message holds, as counted against retention budgets.
    pub fn size(&self) -> usize {
        self.id.len()
            + self.from.len()
            + self.to.len()
            + self.subject.as_ref().map_or(0, |s| s.len())
            + self.body.len()
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.content_type().map_or(0, str::len)
            + self.event().map_or(0, str::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn small_strings_inline_and_boxed() {
        let uuid = "24c287ba-9007-4280-99aa-66e0baa69f5a";
        let long = "x".repeat(Id::INLINE + 1);
        for s in ["", "mo-2", "héllo ✓", uuid, &long[1..], &long] {
            let id = Id::from(s.to_string());
            assert_eq!(id, s);
            assert_eq!(id.as_str(), s);
            assert_eq!(id, Id::new(s));
            assert_eq!(format!("{id}"), s);
            assert_eq!(format!("{id:?}"), format!("{s:?}"));
        }
        assert!(matches!(Id::new(uuid).0, Repr::Inline { .. }));
        assert!(matches!(Id::new(&long).0, Repr::Boxed(_)));
        assert_ne!(Id::new("a"), Id::new("ab"));
        assert_eq!(std::mem::size_of::<Id>(), 40);
        assert_eq!(std::mem::size_of::<Address>(), 24);
        assert!(matches!(
            Address::new("sms://5550001").0,
            Repr::Inline { .. }
        ));
        assert!(matches!(Address::new(uuid).0, Repr::Boxed(_)));
        assert_eq!(Address::from(uuid.to_string()), uuid);
    }

    #[test]
    fn each_format_renders_once_across_threads() {
        let msg = Arc::new(Message::new(
            1,
            "id".into(),
            0,
            Origin::Comet,
            Draft::with_body("hi"),
        ));
        let calls = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (msg, calls) = (msg.clone(), calls.clone());
                std::thread::spawn(move || {
                    let format = Format::ALL[i % 2];
                    msg.rendered(format, |m| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Some(Arc::from(&m.body[..]))
                    })
                })
            })
            .collect();
        let got: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "once per format");
        for pair in got.chunks(2) {
            assert!(Arc::ptr_eq(
                pair[0].as_ref().unwrap(),
                got[0].as_ref().unwrap()
            ));
            assert!(Arc::ptr_eq(
                pair[1].as_ref().unwrap(),
                got[1].as_ref().unwrap()
            ));
        }
        // A format that cannot carry the message caches its `None` too.
        assert!(msg.rendered(Format::CometJson, |_| None).is_none());
        assert!(msg
            .rendered(Format::CometJson, |_| Some(Arc::from(&b"x"[..])))
            .is_none());
    }

    #[test]
    fn ids_are_the_uuid_layout_digit_by_digit() {
        // The layout `Hub::new_id` had when it was written with `format!`.
        let reference = |p: u64, n: u64, r: u64| {
            format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                (p >> 32) as u32,
                (p >> 16) as u16,
                (p & 0xfff) as u16,
                0x8000 | ((r >> 48) as u16 & 0x3fff),
                (n ^ (r << 24)) & 0xffff_ffff_ffff
            )
        };
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..1000 {
            x = x.rotate_left(17).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ 0x94d0_49bb;
            let (p, n, r) = (x, x >> 7, x.wrapping_mul(31));
            assert_eq!(Id::uuid_shaped(p, n, r).as_str(), reference(p, n, r));
        }
        assert_eq!(
            Id::uuid_shaped(0, 0, 0).as_str(),
            "00000000-0000-4000-8000-000000000000"
        );
    }
}
