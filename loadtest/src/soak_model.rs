//! What a soak run does and checks, apart from its sockets: the seeded generator, the
//! protocol mix, QST ids and batches, and the ledger of every id a worker pushed (what the
//! server answered, which replies delivered it, when its acknowledgement was confirmed).

use std::collections::BTreeMap;

use crate::http::{escape, pct};

/// splitmix64: small, seedable, good enough to pick what a client does.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `pct` %.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    /// An index picked with the given weights (not all zero).
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.next() % total.max(1);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// What a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TalkStream,
    TalkPush,
    CometGet,
    CometPut,
    QstProducer,
    QstConsumer,
}

pub const KINDS: [Kind; 6] = [
    Kind::TalkStream,
    Kind::TalkPush,
    Kind::CometGet,
    Kind::CometPut,
    Kind::QstProducer,
    Kind::QstConsumer,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::TalkStream => "talk_pull",
            Kind::TalkPush => "talk_push",
            Kind::CometGet => "comet_get",
            Kind::CometPut => "comet_put",
            Kind::QstProducer => "qst_push",
            Kind::QstConsumer => "qst_pull",
        }
    }
}

/// `--mix`: six weights, in `KINDS` order.
pub fn parse_mix(s: &str) -> Result<Vec<u64>, String> {
    let w: Vec<u64> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("--mix `{s}`: six whole numbers"))
        })
        .collect::<Result<_, _>>()?;
    if w.len() != KINDS.len() || w.iter().sum::<u64>() == 0 {
        return Err(format!(
            "--mix `{s}`: six weights (talk-stream,talk-push,comet-get,comet-put,qst-producer,qst-consumer), not all 0"
        ));
    }
    Ok(w)
}

/// A QST message id: `<run>-<worker>-<n in hex>`.
pub fn qst_id(run: &str, worker: usize, n: u64) -> String {
    format!("{run}-{worker}-{n:x}")
}

/// `n` of an id made by `qst_id` for this run and worker.
pub fn parse_qst_id(id: &str, run: &str, worker: usize) -> Option<u64> {
    let rest = id.strip_prefix(run)?.strip_prefix('-')?;
    let (w, n) = rest.split_once('-')?;
    if w != worker.to_string() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(n, 16).ok()
}

/// The ids (`id="…"` of each `<message`) of an XML pull reply, in order.
pub fn xml_ids(body: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "XML reply is not UTF-8".to_string())?;
    if !text.contains("<messages") {
        return Err(format!("no <messages> in {:?}", escape(body, 120)));
    }
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<message") {
        rest = &rest[i + "<message".len()..];
        if !rest.starts_with([' ', '>', '/', '\t', '\n', '\r']) {
            continue; // `<messages>`
        }
        let tag_end = rest
            .find('>')
            .ok_or_else(|| "unterminated <message> tag".to_string())?;
        let tag = &rest[..tag_end];
        let at = tag
            .find(" id=\"")
            .ok_or_else(|| format!("a <message> without id: {tag:?}"))?;
        let v = &tag[at + 5..];
        let end = v.find('"').ok_or_else(|| "unterminated id".to_string())?;
        ids.push(
            v[..end]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &rest[tag_end..];
    }
    Ok(ids)
}

/// The XML push body of a batch.
pub fn xml_batch(ids: &[String], queue: usize) -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<messages>");
    for id in ids {
        s.push_str(&format!(
            "<message id=\"{id}\" from=\"sms://soak\" to=\"sms://q{queue}\"><subject>soak</subject><body>xml {id} &amp; &lt;ok&gt;</body><property name=\"k\" value=\"{queue}\"/></message>"
        ));
    }
    s.push_str("</messages>");
    s.into_bytes()
}

/// The JSON push body of a batch.
pub fn json_batch(ids: &[String], queue: usize) -> Vec<u8> {
    let items: Vec<String> = ids
        .iter()
        .map(|id| {
            format!("{{\"id\":\"{id}\",\"from\":\"sms://soak\",\"body\":\"json {id} \\u00e9\",\"k\":\"{queue}\"}}")
        })
        .collect();
    format!("[{}]", items.join(",")).into_bytes()
}

pub fn qst_xml_push(channel: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /qst/{} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        pct(channel),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A QST pull; the acknowledgement goes in the query (`etag=`) or, v1 style,
/// in `If-None-Match`.
pub fn qst_pull(
    channel: &str,
    max: usize,
    long_poll: bool,
    json: bool,
    etag: Option<&str>,
    etag_in_header: bool,
) -> Vec<u8> {
    let mut q = format!(
        "GET /qst/{}?max={max}&long-polling={long_poll}{}",
        pct(channel),
        if json { "&format=json" } else { "" }
    );
    if let (Some(e), false) = (etag, etag_in_header) {
        q.push_str("&etag=");
        q.push_str(&pct(e));
    }
    q.push_str(" HTTP/1.1\r\nHost: x\r\n");
    if let (Some(e), true) = (etag, etag_in_header) {
        q.push_str(&format!("If-None-Match: \"{e}\"\r\n"));
    }
    q.push_str("\r\n");
    q.into_bytes()
}

/// Where one pushed id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sent {
    /// In a batch not written yet (or written in part only).
    #[default]
    Unsent,
    /// Written whole; the answer is unknown (the client left, the
    /// connection broke): it may or may not be stored.
    Maybe,
    /// Answered `200`.
    Accepted,
    /// Answered `503` (or another refusal): not stored.
    Refused,
}

#[derive(Debug, Clone, Default)]
pub struct IdRec {
    pub queue: u32,
    pub sent: Sent,
    pub deliveries: u32,
    /// When an acknowledgement covering it was confirmed (the reply to the
    /// request that carried it arrived); 0: not yet.
    pub acked_ns: u64,
    /// Delivered to a consumer that left without acknowledging it.
    pub vanished: bool,
    /// Delivered again after that.
    pub after_vanish: bool,
    /// A pull acknowledging it was written whole, but its consumer left
    /// before the reply: the server may have applied it.
    pub ack_written: bool,
}

/// The QST ledger of one worker: every id it pushed, by `n`.
#[derive(Debug, Default)]
pub struct Ledger {
    pub recs: Vec<IdRec>,
    pub post_ack: u64,
    pub phantom: u64,
    pub wrong_queue: u64,
    pub unexpected: u64,
    pub redeliveries: u64,
    pub delivered: u64,
}

impl Ledger {
    /// A fresh id number for `queue`.
    pub fn alloc(&mut self, queue: usize) -> u64 {
        self.recs.push(IdRec {
            queue: queue as u32,
            ..IdRec::default()
        });
        (self.recs.len() - 1) as u64
    }

    pub fn set(&mut self, ns: &[u64], sent: Sent) {
        for &n in ns {
            self.recs[n as usize].sent = sent;
        }
    }

    /// A reply to a request written at `sent_ns` on `queue` delivered these
    /// ids (already parsed to `n`; `None`: not one of ours). Returns them.
    pub fn delivered(&mut self, queue: usize, sent_ns: u64, ns: &[Option<u64>]) -> Vec<u64> {
        let mut out = Vec::with_capacity(ns.len());
        for n in ns {
            let Some(rec) = n.and_then(|n| self.recs.get_mut(n as usize)) else {
                self.unexpected += 1;
                continue;
            };
            let n = n.expect("checked");
            self.delivered += 1;
            if rec.queue as usize != queue {
                self.wrong_queue += 1;
            }
            if matches!(rec.sent, Sent::Unsent | Sent::Refused) {
                self.phantom += 1;
            }
            if rec.acked_ns != 0 && rec.acked_ns < sent_ns {
                self.post_ack += 1;
            }
            if rec.deliveries > 0 {
                self.redeliveries += 1;
            }
            if rec.vanished {
                rec.after_vanish = true;
            }
            rec.deliveries += 1;
            out.push(n);
        }
        out
    }

    /// The server answered the request that acknowledged these ids.
    pub fn acked(&mut self, ns: &[u64], now: u64) {
        for &n in ns {
            let rec = &mut self.recs[n as usize];
            if rec.acked_ns == 0 {
                rec.acked_ns = now;
            }
        }
    }

    /// A pull acknowledging them was written whole.
    pub fn ack_written(&mut self, ns: &[u64]) {
        for &n in ns {
            self.recs[n as usize].ack_written = true;
        }
    }

    /// Their consumer left without acknowledging them (a consumer that left
    /// after writing the acknowledging pull may have had it applied: those
    /// count as `ack_unconfirmed`, not here).
    pub fn vanished(&mut self, ns: &[u64]) {
        for &n in ns {
            let rec = &mut self.recs[n as usize];
            if rec.acked_ns == 0 && !rec.ack_written {
                rec.vanished = true;
            }
        }
    }

    /// The end-of-run figures.
    pub fn totals(&self) -> BTreeMap<&'static str, u64> {
        let mut t = BTreeMap::new();
        for key in [
            "qst_ids",
            "qst_accepted",
            "qst_maybe",
            "qst_maybe_stored",
            "qst_refused_left",
            "qst_lost",
            "qst_ack_unconfirmed",
            "qst_never_delivered",
            "qst_vanished_msgs",
            "qst_vanished_redelivered",
            "qst_vanished_acked_by_other",
            "qst_vanished_unresolved",
        ] {
            t.insert(key, 0);
        }
        for r in &self.recs {
            *t.get_mut("qst_ids").unwrap() += 1;
            let mut bump = |k: &'static str| *t.get_mut(k).unwrap() += 1;
            match r.sent {
                Sent::Accepted => {
                    bump("qst_accepted");
                    if r.acked_ns == 0 && r.ack_written {
                        bump("qst_ack_unconfirmed");
                    } else if r.acked_ns == 0 {
                        bump("qst_lost");
                    }
                    if r.deliveries == 0 {
                        bump("qst_never_delivered");
                    }
                }
                Sent::Maybe => {
                    bump("qst_maybe");
                    if r.deliveries > 0 {
                        bump("qst_maybe_stored");
                    }
                }
                Sent::Refused => bump("qst_refused_left"),
                Sent::Unsent => {}
            }
            if r.vanished {
                bump("qst_vanished_msgs");
                if r.after_vanish {
                    bump("qst_vanished_redelivered");
                } else if r.acked_ns != 0 {
                    bump("qst_vanished_acked_by_other");
                } else {
                    bump("qst_vanished_unresolved");
                }
            }
        }
        t.insert("qst_delivered", self.delivered);
        t.insert("qst_redeliveries", self.redeliveries);
        t.insert("qst_post_ack_redeliveries", self.post_ack);
        t.insert("qst_phantom", self.phantom);
        t.insert("qst_wrong_queue", self.wrong_queue);
        t.insert("qst_unexpected", self.unexpected);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qst::pulled_ids;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
        assert_eq!(a.range(5, 5), 5);
        let mut hits = [0; 3];
        for _ in 0..3000 {
            hits[a.weighted(&[1, 0, 2])] += 1;
        }
        assert_eq!(hits[1], 0);
        assert!(hits[2] > hits[0]);
    }

    #[test]
    fn ids_round_trip() {
        let id = qst_id("r1a", 3, 0x2f);
        assert_eq!(id, "r1a-3-2f");
        assert_eq!(parse_qst_id(&id, "r1a", 3), Some(0x2f));
        assert_eq!(parse_qst_id(&id, "r1a", 4), None);
        assert_eq!(parse_qst_id(&id, "r1", 3), None);
        assert_eq!(parse_qst_id("r1a-3-", "r1a", 3), None);
        assert_eq!(parse_qst_id("r1a-3-zz", "r1a", 3), None);
    }

    #[test]
    fn xml_reply_ids() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<messages><message id="a-1" from="" to="sms://q" when="2020-01-01T00:00:00Z"><body>x</body></message><message id="b&amp;2" from="x"><body/></message></messages>"#;
        assert_eq!(xml_ids(body).unwrap(), ["a-1", "b&2"]);
        assert_eq!(xml_ids(b"<messages/>").unwrap(), Vec::<String>::new());
        assert!(xml_ids(b"[]").is_err());
        assert!(xml_ids(b"<messages><message from=\"x\"></message></messages>").is_err());
        let ids = vec!["r-0-1".to_string(), "r-0-2".to_string()];
        assert_eq!(xml_ids(&xml_batch(&ids, 1)).unwrap(), ids);
        assert_eq!(pulled_ids(&json_batch(&ids, 1)).unwrap(), ids);
    }

    #[test]
    fn pulls() {
        assert_eq!(
            qst_pull("q", 10, true, true, Some("a-1"), false),
            b"GET /qst/q?max=10&long-polling=true&format=json&etag=a-1 HTTP/1.1\r\nHost: x\r\n\r\n"
                .to_vec()
        );
        assert_eq!(
            qst_pull("q", 5, false, false, Some("a-1"), true),
            b"GET /qst/q?max=5&long-polling=false HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a-1\"\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn ledger_checks() {
        let mut l = Ledger::default();
        let a = l.alloc(0);
        let b = l.alloc(0);
        let c = l.alloc(1);
        l.set(&[a, b], Sent::Accepted);
        // delivered, then delivered again before the ack: a redelivery
        assert_eq!(l.delivered(0, 10, &[Some(a), Some(b)]), vec![a, b]);
        assert_eq!(l.delivered(0, 11, &[Some(a)]), vec![a]);
        assert_eq!(l.redeliveries, 1);
        l.acked(&[a], 20);
        // a request written before the ack was confirmed may still carry it
        l.delivered(0, 19, &[Some(a)]);
        assert_eq!(l.post_ack, 0);
        // one written after may not
        l.delivered(0, 21, &[Some(a)]);
        assert_eq!(l.post_ack, 1);
        // never sent whole, on the wrong queue, not ours
        l.delivered(0, 30, &[Some(c), None]);
        assert_eq!((l.phantom, l.wrong_queue, l.unexpected), (1, 1, 1));
        l.vanished(&[b]);
        let t = l.totals();
        assert_eq!(t["qst_lost"], 1); // b: accepted, never acknowledged
        assert_eq!(t["qst_vanished_unresolved"], 1);
        l.delivered(0, 40, &[Some(b)]);
        l.acked(&[b], 41);
        let t = l.totals();
        assert_eq!(t["qst_lost"], 0);
        assert_eq!(t["qst_vanished_redelivered"], 1);
        assert_eq!(t["qst_accepted"], 2);
        // an acknowledgement written whole whose reply never came
        let d = l.alloc(0);
        l.set(&[d], Sent::Accepted);
        l.delivered(0, 50, &[Some(d)]);
        l.ack_written(&[d]);
        let t = l.totals();
        assert_eq!((t["qst_lost"], t["qst_ack_unconfirmed"]), (0, 1));
    }

    #[test]
    fn mixes() {
        assert_eq!(parse_mix("1,2,3,4,5,6").unwrap(), vec![1, 2, 3, 4, 5, 6]);
        assert!(parse_mix("1,2,3").is_err());
        assert!(parse_mix("0,0,0,0,0,0").is_err());
        assert!(parse_mix("a,1,1,1,1,1").is_err());
    }
}
