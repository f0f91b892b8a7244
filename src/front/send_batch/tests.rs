use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::{send, set_min_turn, stats, Sent};

/// A connected pair on loopback: (the side the test sends on, the side it reads).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    (server, client)
}

fn on_executor<T: Send + 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .make()
        .expect("executor")
        .run(f)
}

#[test]
fn the_sends_of_one_turn_go_to_the_kernel_in_one_call() {
    let pairs: Vec<_> = (0..3).map(|_| pair()).collect();
    let fds: Vec<_> = pairs.iter().map(|(s, _)| s.as_raw_fd()).collect();
    let (before, results, after) = on_executor(async move {
        set_min_turn(0);
        let before = stats();
        let tasks: Vec<_> = fds
            .into_iter()
            .enumerate()
            .map(|(i, fd)| {
                glommio::spawn_local(async move { send(fd, format!("reply {i}").as_bytes()).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await);
        }
        (before, results, stats())
    });
    assert_eq!(results, vec![Sent::Bytes(7); 3]);
    assert_eq!(after.sends - before.sends, 3);
    assert_eq!(
        after.batches - before.batches,
        1,
        "three sends ready in one turn"
    );
    for (i, (_, mut client)) in pairs.into_iter().enumerate() {
        let mut got = [0u8; 7];
        client.read_exact(&mut got).expect("read");
        assert_eq!(&got, format!("reply {i}").as_bytes());
    }
}

#[test]
fn a_socket_without_room_takes_what_fits_and_then_nothing() {
    let (server, _client) = pair();
    let fd = server.as_raw_fd();
    let big = vec![7u8; 16 << 20];
    let (first, second) = on_executor(async move {
        set_min_turn(0);
        let first = send(fd, &big).await;
        let second = send(fd, &big).await;
        (first, second)
    });
    match first {
        Sent::Bytes(n) => assert!(n > 0 && n < 16 << 20, "took {n} of 16 MiB"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        second,
        Sent::Bytes(0),
        "a full socket takes nothing and does not block"
    );
}

#[test]
fn a_send_dropped_before_the_flush_never_reaches_the_socket() {
    let (server, mut client) = pair();
    let fd = server.as_raw_fd();
    let later = on_executor(async move {
        set_min_turn(0);
        // Polled once (queued), then dropped before the flusher ran.
        assert!(futures_lite::future::poll_once(send(fd, b"dropped"))
            .await
            .is_none());
        glommio::timer::sleep(Duration::from_millis(20)).await;
        send(fd, b"kept").await
    });
    assert_eq!(later, Sent::Bytes(4));
    let mut got = [0u8; 4];
    client.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"kept");
    client.set_nonblocking(true).expect("nonblocking");
    let mut more = [0u8; 16];
    match client.read(&mut more) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("more bytes on the socket: {other:?}"),
    }
}

#[test]
fn turns_with_few_replies_are_sent_by_their_writers_and_busy_turns_batch() {
    let pairs: Vec<_> = (0..10).map(|_| pair()).collect();
    let fds: Vec<_> = pairs.iter().map(|(s, _)| s.as_raw_fd()).collect();
    let turns = on_executor(async move {
        set_min_turn(4);
        let mut turns = Vec::new();
        for turn in 0..8 {
            // The first turn has 2 replies, the others 10.
            let n = if turn == 0 { 2 } else { 10 };
            let tasks: Vec<_> = fds[..n]
                .iter()
                .map(|&fd| glommio::spawn_local(async move { send(fd, b"r").await }))
                .collect();
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await);
            }
            turns.push(results);
            // The turn ends: everything ready runs (the flusher too) before the timer fires.
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        turns
    });
    assert_eq!(
        turns[0],
        vec![Sent::Unsent; 2],
        "no batch before turns are busy"
    );
    assert_eq!(
        turns[1],
        vec![Sent::Unsent; 10],
        "the average has not caught up yet"
    );
    // After four turns of 10 the average (each turn weighs 1/8) is past 4.
    assert_eq!(turns[7], vec![Sent::Bytes(1); 10]);
}
