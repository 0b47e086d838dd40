//! A soak client's complete reply: what it says about the session, checked per protocol
//! (Talk, comet, QST push and pull) and recorded in the QST ledger.

use super::*;

impl Worker {
    /// One complete reply. False when the session ended.
    pub(super) fn handle_reply(
        &mut self,
        idx: usize,
        now: u64,
        status: u16,
        head: &[u8],
        body: &[u8],
    ) -> bool {
        let req = std::mem::replace(&mut self.clients[idx].req, Req::None);
        if status == 503 && req == Req::QstPush {
            // Refused whole: nothing stored. Retry the same batch.
            let b = self.clients[idx].batch.clone();
            self.ledger.set(&b, Sent::Refused);
            self.clients[idx].left += 1;
            self.clients[idx].req = Req::QstPush;
            let wait = retry_after(header(head, "retry-after").as_deref()).as_nanos() as u64;
            return self.pause(idx, now, wait.max(50 * MS));
        }
        if status != 200 {
            self.clients[idx].req = req.clone();
            let detail = format!("status {status}: {}", escape(body, 120));
            if let Req::QstPush = req {
                let b = self.clients[idx].batch.clone();
                self.ledger.set(&b, Sent::Refused);
                self.clients[idx].batch.clear();
            }
            self.clients[idx].req = Req::None;
            let proto = req.proto();
            self.error(idx, &format!("err_status_{proto}"), &detail);
            if status == 503 {
                // A refusal (connections, streams): back off.
                self.clients[idx].rst = false;
                self.idle(idx, now, 2000);
                return false;
            }
            self.clients[idx].rst = true;
            self.idle(idx, now, 500);
            return false;
        }
        match req {
            Req::TalkPush => {
                if body != b"noop" {
                    self.error(idx, "err_body_talk_push", &escape(body, 80));
                }
                let t = self.think(idx, 200, 3000);
                self.pause(idx, now, t)
            }
            Req::CometSync => match parse_time_reply(body) {
                Ok(t) => {
                    self.clients[idx].cursor = t;
                    self.clients[idx].req = Req::CometSync; // not None: next is a get
                    self.pause(idx, now, 0)
                }
                Err(e) => {
                    self.fail(idx, now, "proto", &e);
                    false
                }
            },
            Req::CometGet => match parse_get_reply(body) {
                Ok(r) => {
                    let c = &mut self.clients[idx];
                    let mut stale = 0;
                    for m in &r.messages {
                        if m.time <= c.cursor {
                            stale += 1;
                        }
                    }
                    if r.time < c.cursor {
                        stale += 1;
                    }
                    c.cursor = c.cursor.max(r.time);
                    c.req = Req::CometGet;
                    let nmsg = r.messages.len() as u64;
                    self.count("comet_messages", nmsg);
                    if r.missed {
                        self.count("comet_missed", 1);
                    }
                    if stale > 0 {
                        self.error(idx, "err_stale_comet_get", "a time not past the cursor");
                    }
                    self.pause(idx, now, 0)
                }
                Err(e) => {
                    self.fail(idx, now, "proto", &e);
                    false
                }
            },
            Req::CometPut => match parse_time_reply(body) {
                Ok(_) => {
                    let t = self.think(idx, 100, 2000);
                    self.pause(idx, now, t)
                }
                Err(e) => {
                    self.fail(idx, now, "proto", &e);
                    false
                }
            },
            Req::QstPush => {
                let b = std::mem::take(&mut self.clients[idx].batch);
                self.ledger.set(&b, Sent::Accepted);
                let want = qst_id(
                    &self.cfg.ids,
                    self.cfg.common.index,
                    *b.last().expect("batch"),
                );
                if header(head, "etag").as_deref() != Some(want.as_str()) {
                    let got = header(head, "etag");
                    self.error(idx, "err_etag_qst_push", &format!("{got:?}, want {want:?}"));
                }
                self.count("qst_pushed_msgs", b.len() as u64);
                let t = self.think(idx, 100, 1500);
                self.pause(idx, now, t)
            }
            Req::QstPull(acks) => {
                // The server applied the acknowledgement before answering.
                self.ledger.acked(&acks, now);
                self.clients[idx].unacked.clear();
                let ids = if self.clients[idx].json {
                    pulled_ids(body)
                } else {
                    xml_ids(body)
                };
                let ids = match ids {
                    Ok(ids) => ids,
                    Err(e) => {
                        self.fail(idx, now, "proto", &e);
                        return false;
                    }
                };
                let etag = header(head, "etag").unwrap_or_default();
                if let Some(last) = ids.last() {
                    if *last != etag {
                        let s = format!("ETag {etag:?}, last id {last:?}");
                        self.error(idx, "err_etag_qst_pull", &s);
                    }
                }
                let (run, w) = (self.cfg.ids.clone(), self.cfg.common.index);
                let ns: Vec<Option<u64>> = ids.iter().map(|i| parse_qst_id(i, &run, w)).collect();
                let q = self.my_queues[self.clients[idx].channel];
                let sent = self.clients[idx].sent_ns;
                let before = self.ledger.post_ack + self.ledger.phantom + self.ledger.unexpected;
                let got = self.ledger.delivered(q, sent, &ns);
                if self.ledger.post_ack + self.ledger.phantom + self.ledger.unexpected > before {
                    self.say(&format!(
                        "!!! QST pull on queue {q}: post_ack={} phantom={} unexpected={} after this reply: {:?}",
                        self.ledger.post_ack, self.ledger.phantom, self.ledger.unexpected,
                        ids.iter().take(20).collect::<Vec<_>>()
                    ));
                }
                let empty = got.is_empty();
                self.clients[idx].unacked = got;
                if !etag.is_empty() {
                    self.clients[idx].etag = Some(etag);
                }
                if empty {
                    self.count("qst_empty_pulls", 1);
                    self.pause(idx, now, 0)
                } else {
                    let t = self.think(idx, 0, 300);
                    self.pause(idx, now, t)
                }
            }
            Req::TalkPull | Req::None => {
                self.fail(idx, now, "proto", "unexpected reply");
                false
            }
        }
    }
}
