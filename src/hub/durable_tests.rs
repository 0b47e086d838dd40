//! Replay against the running hub: after any sequence of publishes, QST pulls with
//! acknowledgements and tries, clock syncs and compactions — compactions whose snapshot
//! is taken while more changes go on after its boundary — a hub rebuilt from the log reads
//! exactly as the hub that wrote it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::*;
use crate::storage::disk::{Disk, Options};
use crate::storage::{Fsync, Listener, Record, Storage};

struct NoWake;
impl Notify for NoWake {
    fn notify(&self) {}
}

fn limits() -> Limits {
    Limits {
        channel_capacity: 4,
        channel_bytes: 1 << 20,
        channel_idle: Duration::from_secs(3600),
        max_channels: 100,
        max_waiters: 10,
        queue_capacity: 1000,
        queue_bytes: 1 << 20,
        qst_max_tries: 3,
        retained_bytes: 1 << 30,
        channel_ttl: Duration::ZERO,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Publish {
        ch: usize,
        n: usize,
        queue: bool,
    },
    Pull {
        ch: usize,
        ack: usize,
        max: usize,
    },
    Sync {
        ch: usize,
    },
    Address {
        n: usize,
    },
    /// A compaction, with these changes made after its boundary and before its snapshot.
    Compact(Vec<Op>),
}

const CHANNELS: [&str; 3] = ["a", "b", "q/c"];

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let simple = prop_oneof![
        (0..3usize, 1..4usize, any::<bool>()).prop_map(|(ch, n, queue)| Op::Publish {
            ch,
            n,
            queue
        }),
        (0..3usize, any::<usize>(), 1..4usize).prop_map(|(ch, ack, max)| Op::Pull { ch, ack, max }),
        (0..3usize).prop_map(|ch| Op::Sync { ch }),
        (0..3usize).prop_map(|n| Op::Address { n }),
    ];
    prop_oneof![
        4 => simple.clone(),
        1 => proptest::collection::vec(simple, 0..4).prop_map(Op::Compact),
    ]
}

/// The hub and a counter for fresh message ids.
struct World {
    hub: Arc<Hub>,
    next: Mutex<u64>,
}

impl World {
    fn apply(&self, op: &Op) {
        match *op {
            Op::Publish { ch, n, queue } => {
                let drafts = (0..n)
                    .map(|_| {
                        let mut next = self.next.lock().unwrap();
                        *next += 1;
                        Draft {
                            id: Some(format!("m{next}")),
                            ..Draft::with_body(format!("body {next}"))
                        }
                    })
                    .collect();
                let _ = self.hub.publish(CHANNELS[ch], drafts, Origin::Qst, queue);
            }
            Op::Pull { ch, ack, max } => {
                let read = self.hub.read(CHANNELS[ch], 0, 100);
                let id = read
                    .messages
                    .get(ack % (read.messages.len() + 1))
                    .map(|m| m.id.to_string());
                let a = Ack {
                    upto: id.as_deref(),
                    ..Ack::default()
                };
                let _ = self.hub.qst_pull(CHANNELS[ch], Some(&a), max);
            }
            Op::Sync { ch } => {
                let _ = self.hub.sync(CHANNELS[ch]);
            }
            Op::Address { n } => {
                let _ = self.hub.set_address("acme", &format!("sms://{n}"));
            }
            Op::Compact(_) => {}
        }
    }

    /// What a reader sees: each channel's messages, clock, last id and pending queue ids
    /// (read without counting a try), and the address.
    fn state(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ch in CHANNELS {
            let r = self.hub.read(ch, 0, 1000);
            let msgs: Vec<String> = r
                .messages
                .iter()
                .map(|m| format!("{}:{}:{}", m.seq, m.id, String::from_utf8_lossy(&m.body)))
                .collect();
            let pending = self.hub.with_existing(ch, |c| {
                c.store.queue().map(|q| {
                    let (acked, acked_id, done, tries) = q.state();
                    format!("{acked} {acked_id:?} {done:?} {tries:?} {}", q.pending())
                })
            });
            out.push(format!(
                "{ch}: clock {} missed-from-0 {} last {:?} {msgs:?} queue {pending:?}",
                r.clock,
                r.missed,
                self.hub.last_id(ch)
            ));
        }
        out.push(format!("address {:?}", self.hub.address("acme")));
        out
    }
}

/// Runs the changes a compaction's `Op` carries between its boundary and its snapshot.
struct Between {
    world: Weak<World>,
    ops: Mutex<Vec<Op>>,
}

impl Listener for Between {
    fn synced(&self, _durable: u64, _failed: u64) {}
    fn snapshot(&self, out: &mut dyn FnMut(&Record<'_>)) -> bool {
        let Some(world) = self.world.upgrade() else {
            return false;
        };
        for op in std::mem::take(&mut *self.ops.lock().unwrap()) {
            world.apply(&op);
        }
        world.hub.snapshot(out);
        true
    }
}

fn open(dir: &std::path::Path) -> (Arc<World>, Arc<Disk>) {
    let opts = Options {
        dir: dir.to_path_buf(),
        fsync: Fsync::Never,
        segment_bytes: 2048,
        compact_bytes: u64::MAX,
        buffer_bytes: 1 << 30,
    };
    let metrics = Arc::new(Metrics::default());
    let disk = Arc::new(Disk::open(opts, metrics.clone()).unwrap());
    let mailbox = Arc::new(Mailbox::new(Box::new(NoWake)));
    let storage: Arc<dyn Storage> = disk.clone();
    let hub = Hub::with_storage(limits(), vec![mailbox], metrics, storage);
    hub.restore().unwrap();
    let world = Arc::new(World {
        hub: Arc::new(hub),
        next: Mutex::new(0),
    });
    (world, disk)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

    #[test]
    fn a_rebuilt_hub_reads_as_the_one_that_wrote_the_log(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        crate::log::set_level(crate::log::Level::Error);
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tidings-hub-replay-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (world, disk) = open(&dir);
        let between = Arc::new(Between {
            world: Arc::downgrade(&world),
            ops: Mutex::new(Vec::new()),
        });
        disk.start(between.clone()).unwrap();
        for op in &ops {
            match op {
                Op::Compact(during) => {
                    *between.ops.lock().unwrap() = during.clone();
                    disk.compact(&*between).unwrap();
                }
                op => world.apply(op),
            }
        }
        let want = world.state();
        disk.close();
        drop(world);
        drop(disk);
        let (again, disk) = open(&dir);
        let got = again.state();
        disk.close();
        let _ = std::fs::remove_dir_all(&dir);
        proptest::prop_assert_eq!(got, want);
    }
}
