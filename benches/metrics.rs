//! Contended counting: two threads incrementing one counter, as two workers do with
//! `messages_delivered`. A single shared `AtomicU64` (what `Counter` was) against the sharded
//! `tidings::metrics::Counter` (one cache line per thread slot, summed when read).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tidings::metrics::Counter;

const THREADS: usize = 2;

/// Runs `inc` `iters` times on each of `THREADS` threads; the time is for all of them.
fn contended(iters: u64, inc: &(dyn Fn() + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..iters {
                    inc();
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter_inc_2_threads");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    let single = AtomicU64::new(0);
    g.bench_function("single_atomic", |b| {
        b.iter_custom(|iters| {
            contended(iters, &|| {
                black_box(&single).fetch_add(1, Relaxed);
            })
        })
    });
    let sharded = Counter::default();
    g.bench_function("sharded", |b| {
        b.iter_custom(|iters| contended(iters, &|| black_box(&sharded).inc()))
    });
    g.finish();
    black_box((single.load(Relaxed), sharded.get()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
