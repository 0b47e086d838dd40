//! The hub's unit tests: clocks, retention, wake-ups, Talk names, limits, queues, the
//! two-phase publish.

use super::*;
use std::sync::atomic::AtomicUsize;

struct Count(Arc<AtomicUsize>);
impl Notify for Count {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn limits() -> Limits {
    Limits {
        channel_capacity: 3,
        channel_bytes: 1 << 20,
        channel_idle: Duration::from_secs(0),
        max_channels: 10,
        max_waiters: 10,
        queue_capacity: 5,
        queue_bytes: 1 << 20,
        qst_max_tries: 0,
        retained_bytes: 1 << 30,
        channel_ttl: Duration::ZERO,
    }
}

fn hub(workers: usize) -> (Hub, Vec<Arc<Mailbox>>, Vec<Arc<AtomicUsize>>) {
    let counts: Vec<_> = (0..workers)
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let boxes: Vec<_> = counts
        .iter()
        .map(|c| Arc::new(Mailbox::new(Box::new(Count(c.clone())))))
        .collect();
    (
        Hub::new(limits(), boxes.clone(), Arc::new(Metrics::default())),
        boxes,
        counts,
    )
}

fn put(h: &Hub, ch: &str, body: &str) -> Arc<Message> {
    h.publish(ch, vec![Draft::with_body(body)], Origin::Comet, false)
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn seq_is_strictly_increasing_and_above_sync() {
    let (h, _, _) = hub(1);
    let mut last = h.sync("c").unwrap();
    for i in 0..100 {
        let m = put(&h, "c", &i.to_string());
        assert!(m.seq > last);
        last = m.seq;
        let s = h.sync("c").unwrap();
        assert!(s >= last);
        last = s;
    }
}

#[test]
fn retention_drops_oldest_and_reports_missed() {
    let (h, _, _) = hub(1);
    let first = put(&h, "c", "a");
    for b in ["b", "c", "d"] {
        put(&h, "c", b);
    }
    let r = h.read("c", 0, 10);
    assert_eq!(r.messages.len(), 3);
    assert_eq!(&*r.messages[0].body, b"b");
    assert!(r.missed);
    let r = h.read("c", first.seq, 10);
    assert!(!r.missed);
    assert_eq!(r.messages.len(), 3);
}

#[test]
fn one_wake_per_worker_per_batch() {
    let (h, boxes, counts) = hub(2);
    h.subscribe(
        "c",
        Subscribe {
            worker: 1,
            token: 7,
            since: None,
            talk_name: None,
        },
    )
    .unwrap();
    put(&h, "c", "a");
    put(&h, "c", "b");
    assert_eq!(counts[0].load(Ordering::SeqCst), 0);
    assert_eq!(counts[1].load(Ordering::SeqCst), 1);
    let mut mail = Vec::new();
    boxes[1].take(&mut mail);
    assert_eq!(mail.len(), 2);
    put(&h, "c", "c");
    assert_eq!(counts[1].load(Ordering::SeqCst), 2);
    h.unsubscribe(
        "c",
        WaiterRef {
            worker: 1,
            token: 7,
        },
        true,
        None,
    );
    put(&h, "c", "d");
    assert_eq!(counts[1].load(Ordering::SeqCst), 2);
}

#[test]
fn since_returns_backlog_and_cursor() {
    let (h, _, _) = hub(1);
    let a = put(&h, "c", "a");
    put(&h, "c", "b");
    let s = h
        .subscribe(
            "c",
            Subscribe {
                worker: 0,
                token: 1,
                since: Some(a.seq),
                talk_name: None,
            },
        )
        .unwrap();
    assert_eq!(s.backlog.len(), 1);
    assert_eq!(&*s.backlog[0].body, b"b");
    assert_eq!(s.cursor, s.backlog[0].seq);
}

#[test]
fn same_talk_name_replaces_the_old_stream() {
    let (h, boxes, _) = hub(2);
    let sub = |w, t| Subscribe {
        worker: w,
        token: t,
        since: None,
        talk_name: Some("bob"),
    };
    h.subscribe("c", sub(0, 1)).unwrap();
    h.subscribe("c", sub(1, 2)).unwrap();
    let mut mail = Vec::new();
    boxes[0].take(&mut mail);
    assert!(matches!(mail.as_slice(), [Mail::EndStream { token: 1 }]));
    // The old stream leaving does not release the new one's name.
    h.unsubscribe(
        "c",
        WaiterRef {
            worker: 0,
            token: 1,
        },
        true,
        Some("bob"),
    );
    h.subscribe("c", sub(0, 3)).unwrap();
    let mut mail = Vec::new();
    boxes[1].take(&mut mail);
    assert!(matches!(mail.as_slice(), [Mail::EndStream { token: 2 }]));
}

#[test]
fn limits_on_channels_and_waiters() {
    let (h, _, _) = hub(1);
    for i in 0..10 {
        h.sync(&format!("c{i}")).unwrap();
    }
    assert_eq!(h.sync("c10"), Err(HubError::TooManyChannels));
    for t in 0..10 {
        h.subscribe(
            "c0",
            Subscribe {
                worker: 0,
                token: t,
                since: None,
                talk_name: None,
            },
        )
        .unwrap();
    }
    let r = h.subscribe(
        "c0",
        Subscribe {
            worker: 0,
            token: 99,
            since: None,
            talk_name: None,
        },
    );
    assert_eq!(r.unwrap_err(), HubError::TooManyWaiters);
}

#[test]
fn sweep_removes_idle_empty_channels_only() {
    let (h, _, _) = hub(1);
    h.sync("empty").unwrap();
    put(&h, "full", "x");
    h.subscribe(
        "watched",
        Subscribe {
            worker: 0,
            token: 1,
            since: None,
            talk_name: None,
        },
    )
    .unwrap();
    assert_eq!(h.sweep(), 1);
    assert_eq!(h.channel_count(), 2);
}

#[test]
fn a_queue_refuses_a_batch_past_its_count_or_bytes_whole() {
    let (h, _, _) = hub(1);
    let batch = |n: usize, size: usize| -> Vec<Draft> {
        (0..n).map(|_| Draft::with_body(vec![b'x'; size])).collect()
    };
    h.publish("q", batch(3, 10), Origin::Qst, true).unwrap();
    // 3 pending + 3 > queue_capacity 5: nothing of the batch is stored.
    assert_eq!(
        h.publish("q", batch(3, 10), Origin::Qst, true).unwrap_err(),
        HubError::QueueFull
    );
    assert_eq!(h.qst_pull("q", None, 100).unwrap().messages.len(), 3);
    // A message that would take the channel past queue_bytes is refused too.
    let big = batch(1, (1 << 20) + 1);
    assert_eq!(
        h.publish("q", big, Origin::Qst, true).unwrap_err(),
        HubError::QueueFull
    );
    assert_eq!(h.qst_pull("q", None, 100).unwrap().messages.len(), 3);
}

#[test]
fn a_queue_stores_each_id_once() {
    let (h, _, _) = hub(1);
    let d = |id: &str| Draft {
        id: Some(id.into()),
        ..Draft::with_body(id)
    };
    let stored = h
        .publish("q", vec![d("a"), d("b"), d("a")], Origin::Qst, true)
        .unwrap();
    assert_eq!(stored.len(), 2);
    let again = h
        .publish("q", vec![d("b"), d("c")], Origin::Qst, true)
        .unwrap();
    assert_eq!(
        again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    // Acknowledged and dropped by retention (capacity 3): the id may come again.
    h.qst_pull(
        "q",
        Some(&Ack {
            upto: Some("c"),
            ..Ack::default()
        }),
        10,
    )
    .unwrap();
    h.publish("q", vec![d("x"), d("y")], Origin::Qst, true)
        .unwrap();
    let back = h.publish("q", vec![d("a")], Origin::Qst, true).unwrap();
    assert_eq!(back.len(), 1, "a left the channel, so it is new again");
}

#[test]
fn ids_are_unique_and_uuid_shaped() {
    let (h, _, _) = hub(1);
    let ids: std::collections::HashSet<_> = (0..10_000).map(|_| h.new_id()).collect();
    assert_eq!(ids.len(), 10_000);
    let id = h.new_id();
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);
}

fn watch(h: &Hub, ch: &str, worker: usize) {
    h.subscribe(
        ch,
        Subscribe {
            worker,
            token: 1,
            since: None,
            talk_name: None,
        },
    )
    .unwrap();
}

/// The `seq` of every `Deliver` in a worker's mailbox, draining it.
fn mail_seqs(mailbox: &Mailbox) -> Vec<u64> {
    let mut mail = Vec::new();
    mailbox.take(&mut mail);
    mail.iter()
        .filter_map(|m| match m {
            Mail::Deliver { msg, .. } => Some(msg.seq),
            _ => None,
        })
        .collect()
}

fn drafts(bodies: &[&str]) -> Vec<Draft> {
    bodies.iter().map(|b| Draft::with_body(*b)).collect()
}

#[test]
fn append_stores_and_deliver_posts() {
    let (h, boxes, counts) = hub(2);
    watch(&h, "c", 1);
    let a = h
        .append("c", drafts(&["a", "b"]), Origin::Comet, false)
        .unwrap();
    assert_eq!(a.channel(), "c");
    assert_eq!(a.messages().len(), 2);
    assert_eq!(a.last_seq(), Some(a.messages()[1].seq));
    // Stored: readers see it at once. Not delivered: no mail, no wake-up yet.
    assert_eq!(h.read("c", 0, 10).messages.len(), 2);
    assert!(mail_seqs(&boxes[1]).is_empty());
    assert_eq!(counts[1].load(Ordering::SeqCst), 0);
    let want: Vec<u64> = a.messages().iter().map(|m| m.seq).collect();
    let delivered = h.deliver(a);
    assert_eq!(delivered.len(), 2);
    assert_eq!(mail_seqs(&boxes[1]), want);
    assert_eq!(
        counts[1].load(Ordering::SeqCst),
        1,
        "one wake for the batch"
    );
    assert_eq!(counts[0].load(Ordering::SeqCst), 0, "no waiter on worker 0");
    // An empty batch delivers nothing.
    let empty = h.append("c", Vec::new(), Origin::Comet, false).unwrap();
    assert!(h.deliver(empty).is_empty());
    assert!(mail_seqs(&boxes[1]).is_empty());
}

#[test]
fn delivering_out_of_order_keeps_mail_in_seq_order_each_message_once() {
    let (h, boxes, counts) = hub(1);
    watch(&h, "c", 0);
    let first = h
        .append("c", drafts(&["a", "b"]), Origin::Comet, false)
        .unwrap();
    let second = h.append("c", drafts(&["c"]), Origin::Comet, false).unwrap();
    let all: Vec<u64> = first
        .messages()
        .iter()
        .chain(second.messages())
        .map(|m| m.seq)
        .collect();
    // The later batch releases the earlier one, which then posts nothing again.
    h.deliver(second);
    assert_eq!(mail_seqs(&boxes[0]), all);
    h.deliver(first);
    assert!(mail_seqs(&boxes[0]).is_empty());
    assert_eq!(counts[0].load(Ordering::SeqCst), 1);
    // `publish` releases a batch appended and not yet delivered, in order, too.
    let pending = h.append("c", drafts(&["d"]), Origin::Comet, false).unwrap();
    let d = pending.messages()[0].seq;
    let e = put(&h, "c", "e");
    assert_eq!(mail_seqs(&boxes[0]), [d, e.seq]);
    h.deliver(pending);
    assert!(mail_seqs(&boxes[0]).is_empty());
}

#[test]
fn a_refused_append_stores_nothing_and_delivers_nothing() {
    let (h, boxes, _) = hub(1);
    watch(&h, "q", 0);
    let batch = |n: usize| (0..n).map(|_| Draft::with_body("x")).collect::<Vec<_>>();
    let ok = h.append("q", batch(5), Origin::Qst, true).unwrap();
    assert_eq!(
        h.append("q", batch(1), Origin::Qst, true).unwrap_err(),
        HubError::QueueFull
    );
    assert_eq!(h.deliver(ok).len(), 5);
    assert_eq!(mail_seqs(&boxes[0]).len(), 5);
}

#[test]
fn concurrent_two_phase_publishers_keep_each_workers_mail_in_seq_order() {
    let limits = Limits {
        channel_capacity: 100_000,
        ..limits()
    };
    let boxes: Vec<_> = (0..2)
        .map(|_| Arc::new(Mailbox::new(Box::new(Count(Arc::new(AtomicUsize::new(0)))))))
        .collect();
    let h = Arc::new(Hub::new(
        limits,
        boxes.clone(),
        Arc::new(Metrics::default()),
    ));
    watch(&h, "c", 0);
    watch(&h, "c", 1);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..200 {
                    let a = h.append("c", drafts(&["m"]), Origin::Comet, false).unwrap();
                    // Deliver some batches late, after later ones of this thread.
                    held.push(a);
                    if (i + t) % 3 == 0 {
                        for a in held.drain(..).rev() {
                            h.deliver(a);
                        }
                    }
                }
                for a in held {
                    h.deliver(a);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stored: Vec<u64> = h
        .read("c", 0, usize::MAX)
        .messages
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(stored.len(), 800);
    for mailbox in &boxes {
        assert_eq!(mail_seqs(mailbox), stored);
    }
}

#[test]
fn a_retention_cap_for_one_channel() {
    let (h, _, _) = hub(2);
    h.cap_retention("s", 1);
    assert_eq!(h.channel_count(), 0, "capping does not create a channel");
    watch(&h, "s", 0);
    h.cap_retention("s", 1);
    for b in ["a", "b", "c"] {
        put(&h, "s", b);
    }
    let r = h.read("s", 0, 10);
    assert_eq!(r.messages.len(), 1, "the cap keeps the latest only");
    assert_eq!(&*r.messages[0].body, b"c");
    // A cap above --channel-capacity (3 here) does not raise it.
    h.cap_retention("s", 100);
    for b in ["d", "e", "f", "g"] {
        put(&h, "s", b);
    }
    assert_eq!(h.read("s", 0, 10).messages.len(), 3);
    // Other channels keep their own retention.
    for b in ["a", "b", "c"] {
        put(&h, "t", b);
    }
    assert_eq!(h.read("t", 0, 10).messages.len(), 3);
}
