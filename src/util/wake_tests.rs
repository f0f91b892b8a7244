//! The build's glommio is patched (`patches/`): its rings are set up with
//! `IORING_SETUP_COOP_TASKRUN`, so a completion reaches its executor as task work without an
//! IPI. A parked executor must still wake for the eventfd another thread writes to wake it.
//! These tests wake a parking executor from another thread at every point of its way to sleep:
//! a lost wake would leave it asleep for good, and the waker's wait for the answer runs out.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;

/// Round trips per test: each catches the executor at another point of parking.
const ROUNDS: u32 = 20_000;
/// Far longer than any wake takes; reached only when a wake was lost.
const LOST: Duration = Duration::from_secs(10);

/// Busy-waits (no sleep: a sleeping thread would always find the executor asleep).
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// How long round `i` waits before it wakes the executor: 0-63 µs, so the wake finds it still
/// running, about to park, or asleep.
fn gap(i: u32) -> Duration {
    Duration::from_micros(u64::from(i.wrapping_mul(37) % 64))
}

/// Round `i`'s answer, or the test fails: none within `LOST` means a wake was lost.
fn expect_answer(answers: &mpsc::Receiver<u32>, i: u32) {
    match answers.recv_timeout(LOST) {
        Ok(got) => assert_eq!(got, i),
        Err(e) => panic!("round {i}: no answer within {LOST:?} ({e}): a wake was lost"),
    }
}

#[test]
fn a_wake_from_another_thread_always_reaches_a_parking_executor() {
    let (to_ex, mut rx) = futures_channel::mpsc::unbounded::<u32>();
    let (to_main, answers) = mpsc::channel::<u32>();
    let ex = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            while let Some(i) = rx.next().await {
                if to_main.send(i).is_err() {
                    return;
                }
            }
        })
        .expect("an executor");
    for i in 0..ROUNDS {
        spin(gap(i));
        to_ex.unbounded_send(i).expect("the executor runs");
        expect_answer(&answers, i);
    }
    drop(to_ex);
    ex.join().expect("the executor ends");
}

#[test]
fn a_blocking_call_finishing_on_the_pool_always_wakes_its_executor() {
    let (to_main, answers) = mpsc::channel::<u32>();
    let ex = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            for i in 0..ROUNDS / 4 {
                let got = glommio::executor()
                    .spawn_blocking(move || {
                        spin(gap(i));
                        i
                    })
                    .await;
                if to_main.send(got).is_err() {
                    return;
                }
            }
        })
        .expect("an executor");
    for i in 0..ROUNDS / 4 {
        expect_answer(&answers, i);
    }
    ex.join().expect("the executor ends");
}
