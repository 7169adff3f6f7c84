//! Hostile clients on raw TCP sockets: the server answers each with a specific error or
//! drops only that connection, keeps serving a well-behaved client, and changes no data.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, greet, info_payload, option, pseudo_random};
use dw_nbd::proto::{self, RequestHeader, cmd, errno, opt, rep};
use dw_nbd::{MemoryExport, MemoryExportOptions, NbdServer, ServerConfig, StaticCatalog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SIZE: u64 = 8 << 20;

/// Reads until the server closes the connection; fails if it takes too long.
async fn expect_closed(mut s: TcpStream) {
    let mut sink = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "server kept a hostile connection open");
}

/// The well-behaved client writes and reads back one block.
async fn check_good(good: &mut Client<TcpStream>, round: u8) {
    let off = u64::from(round) * 4096;
    good.write(off, &[round; 4096], 0).await.unwrap();
    assert_eq!(good.read(off, 4096).await.unwrap(), vec![round; 4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_disturb_others() {
    let initial = pseudo_random(usize::try_from(SIZE).unwrap(), 5);
    let vol = Arc::new(
        MemoryExport::from_contents(SIZE, &initial, MemoryExportOptions::default()).unwrap(),
    );
    let ro = Arc::new(
        MemoryExport::from_contents(
            SIZE,
            &initial,
            MemoryExportOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let cat = Arc::new(
        StaticCatalog::new()
            .with_export("vol", "", vol.clone())
            .with_export("ro", "", ro.clone()),
    );
    // A generous handshake timeout here, so a loaded machine cannot time out the negotiations
    // below; step 9 has its own server with a short one.
    let server = NbdServer::new(
        cat.clone(),
        ServerConfig {
            handshake_timeout: Duration::from_secs(60),
            max_request_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = server.clone();
    let serving = tokio::spawn(async move { srv.serve(listener, std::future::pending()).await });
    let connect = || async move { TcpStream::connect(addr).await.unwrap() };

    // A well-behaved client stays connected throughout.
    let mut good = Client::connect(connect().await, "vol").await.unwrap();
    let mut expected = initial.clone();
    let mut round = 0u8;
    let mut next_round = |expected: &mut Vec<u8>| {
        round += 1;
        let off = usize::from(round) * 4096;
        expected[off..off + 4096].fill(round);
        round
    };

    // 1. Garbage instead of an option header: hard disconnect.
    let mut s = connect().await;
    greet(&mut s, 3).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    expect_closed(s).await;
    let r = next_round(&mut expected);
    check_good(&mut good, r).await;

    // 2. Unknown options get NBD_REP_ERR_UNSUP and the session continues to a working GO.
    let mut s = connect().await;
    greet(&mut s, 3).await;
    for o in [0u32, 4, 11, 42, 0x8000_0000, u32::MAX] {
        let r = option(&mut s, o, b"payload").await.unwrap();
        assert_eq!(r[0].0, rep::ERR_UNSUP, "option {o}");
    }
    let r = option(&mut s, opt::GO, &info_payload("vol", &[]))
        .await
        .unwrap();
    assert_eq!(r.last().unwrap().0, rep::ACK);
    drop(s);

    // 3. Option lengths: 100 KB is drained and refused; 4 GiB drops the connection at once.
    let mut s = connect().await;
    greet(&mut s, 3).await;
    let r = option(&mut s, opt::LIST, &vec![0u8; 100_000])
        .await
        .unwrap();
    assert_eq!(r[0].0, rep::ERR_TOO_BIG);
    s.write_all(&proto::encode_option_header(opt::GO, u32::MAX))
        .await
        .unwrap();
    s.write_all(&[0u8; 4096]).await.unwrap();
    expect_closed(s).await;
    let r = next_round(&mut expected);
    check_good(&mut good, r).await;

    // 4. Reads and writes beyond the end, overflowing ranges, oversize requests: errors,
    //    nothing changed, connection alive.
    let mut h = Client::connect(connect().await, "vol").await.unwrap();
    assert_eq!(h.read(SIZE - 1, 2).await, Err(errno::EINVAL));
    assert_eq!(h.read(u64::MAX, u32::MAX).await, Err(errno::EINVAL));
    assert_eq!(h.write(SIZE - 2, &[0xee; 4], 0).await, Err(errno::ENOSPC));
    assert_eq!(
        h.write(u64::MAX - 1, &[0xee; 4], 0).await,
        Err(errno::EINVAL)
    );
    assert_eq!(h.read(0, (1 << 20) + 1).await, Err(errno::EINVAL));
    assert_eq!(
        h.write(0, &vec![0xee; (1 << 20) + 4096], 0).await,
        Err(errno::EINVAL)
    );
    assert_eq!(h.command(cmd::TRIM, 0, SIZE, 1).await, errno::EINVAL);
    assert_eq!(
        h.command(cmd::WRITE_ZEROES, 0, SIZE - 1, 2).await,
        errno::ENOSPC
    );
    assert_eq!(h.command(200, 0xffff, 0, 0).await, errno::EINVAL);
    assert_eq!(h.read(0, 4).await.unwrap(), &expected[..4]);
    // 5. Bad request magic: that connection (only) is dropped.
    let mut bad = proto::encode_request_header(&RequestHeader {
        flags: 0,
        command: cmd::WRITE,
        handle: 1,
        offset: 0,
        length: 16,
    });
    bad[1] ^= 0xff;
    h.s.write_all(&bad).await.unwrap();
    h.s.write_all(&[0xee; 16]).await.unwrap();
    expect_closed(h.s).await;
    let r = next_round(&mut expected);
    check_good(&mut good, r).await;

    // 6. A write announcing 4 GiB of payload: dropped without buffering.
    let mut h = Client::connect(connect().await, "vol").await.unwrap();
    h.send(cmd::WRITE, 0, 0, u32::MAX, &vec![0xee; 65536]).await;
    expect_closed(h.s).await;

    // 7. Writes, trims and zeroes on the read-only export: EPERM, data unchanged.
    let mut h = Client::connect(connect().await, "ro").await.unwrap();
    assert_eq!(h.write(0, &[0xee; 4096], 0).await, Err(errno::EPERM));
    assert_eq!(h.command(cmd::TRIM, 0, 0, 4096).await, errno::EPERM);
    assert_eq!(h.command(cmd::WRITE_ZEROES, 0, 0, 4096).await, errno::EPERM);
    assert!(ro.to_vec() == initial, "read-only export changed");

    // 8. Random bytes at every stage, and clients that vanish mid-request.
    for seed in 0..20u64 {
        let junk = pseudo_random(2000, seed);
        let mut s = connect().await;
        if seed % 2 == 0 {
            greet(&mut s, 3).await;
        }
        let _ = s.write_all(&junk).await;
        drop(s);
        let mut h = Client::connect(connect().await, "vol").await.unwrap();
        h.send(cmd::WRITE, 0, 0, 4096, &junk[..100]).await; // payload cut short
        drop(h);
    }
    // 9. Clients that never finish negotiation are dropped after the handshake timeout (1 s
    //    on a second server over the same exports).
    let quick = NbdServer::new(
        cat,
        ServerConfig {
            handshake_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .unwrap();
    let quick_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let quick_addr = quick_listener.local_addr().unwrap();
    let q = quick.clone();
    let quick_serving =
        tokio::spawn(async move { q.serve(quick_listener, std::future::pending()).await });
    let idle = TcpStream::connect(quick_addr).await.unwrap();
    let mut silent = TcpStream::connect(quick_addr).await.unwrap();
    let mut g = [0u8; 18];
    silent.read_exact(&mut g).await.unwrap();
    expect_closed(silent).await;
    drop(idle);
    quick.begin_shutdown();
    quick_serving.await.unwrap().unwrap();
    let r = next_round(&mut expected);
    check_good(&mut good, r).await;

    // Everything the good client did is there, nothing else changed.
    assert!(vol.to_vec() == expected, "hostile clients changed data");
    assert!(ro.to_vec() == initial);
    good.disconnect().await;
    server.begin_shutdown();
    serving.await.unwrap().unwrap();
}
