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
}

impl Format {
    /// Every format, in slot order.
    pub const ALL: [Format; 3] = [Format::TalkNul, Format::TalkNewline, Format::CometJson];

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
    }
}

/// A stored message. `seq` is unique and strictly increasing within its channel.
#[derive(Debug)]
pub struct Message {
    pub seq: u64,
    pub id: String,
    pub from: String,
    pub to: String,
    /// Seconds since the Unix epoch, UTC.
    pub when: i64,
    pub subject: Option<String>,
    pub body: Vec<u8>,
    pub properties: Vec<(String, String)>,
    pub origin: Origin,
    /// Cached renders, one per wire format that delivers this message (see module doc).
    renders: Renders,
}

impl Message {
    /// Makes a stored message from a draft whose `id` and `when` are already decided.
    pub fn new(seq: u64, id: String, when: i64, origin: Origin, draft: Draft) -> Message {
        Message {
            seq,
            id,
            from: draft.from,
            to: draft.to,
            when,
            subject: draft.subject,
            body: draft.body,
            properties: draft.properties,
            origin,
            renders: Renders::default(),
        }
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
            id: Some(self.id.clone()),
            from: self.from.clone(),
            to: self.to.clone(),
            when: Some(self.when),
            subject: self.subject.clone(),
            body: self.body.clone(),
            properties: self.properties.clone(),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
}
