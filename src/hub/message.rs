//! The message: what every protocol stores into and reads out of a channel.
//!
//! A message is immutable once stored and shared (`Arc<Message>`) by every connection that
//! delivers it. Its encoded forms (a Talk record, a comet JSON object) are made at most once
//! per message and cached beside it, so a fan-out to N subscribers renders once, not N times.

use std::sync::OnceLock;

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
    /// Cached renders, one per protocol that delivers this message (see module doc).
    pub(crate) talk_record: OnceLock<Option<std::sync::Arc<[u8]>>>,
    pub(crate) comet_json: OnceLock<std::sync::Arc<str>>,
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
            talk_record: OnceLock::new(),
            comet_json: OnceLock::new(),
        }
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
