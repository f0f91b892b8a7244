//! Cross-thread hand-off costs that bound the request path: a crossbeam channel round trip
//! between two threads (send, the other thread answers), and waking a thread parked on a
//! `futures_channel::oneshot` completed by another thread.

use std::thread;

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam::channel;
use futures_channel::oneshot;

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");

    let (to_echo, echo_in) = channel::bounded::<u64>(1024);
    let (echo_out, from_echo) = channel::bounded::<u64>(1024);
    let echo = thread::spawn(move || {
        while let Ok(v) = echo_in.recv() {
            if echo_out.send(v + 1).is_err() {
                break;
            }
        }
    });
    g.bench_function("crossbeam_round_trip", |b| {
        b.iter(|| {
            to_echo.send(1).expect("echo thread alive");
            from_echo.recv().expect("echo thread alive")
        })
    });
    drop(to_echo);
    let _ = echo.join();

    let (to_waker, waker_in) = channel::bounded::<oneshot::Sender<u64>>(1024);
    let waker = thread::spawn(move || {
        while let Ok(tx) = waker_in.recv() {
            let _ = tx.send(7);
        }
    });
    g.bench_function("oneshot_cross_thread_wake", |b| {
        b.iter(|| {
            let (tx, rx) = oneshot::channel();
            to_waker.send(tx).expect("waker thread alive");
            futures_lite::future::block_on(rx).expect("sender completes")
        })
    });
    drop(to_waker);
    let _ = waker.join();
    g.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
