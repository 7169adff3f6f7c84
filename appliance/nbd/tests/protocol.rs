//! The connection state machine driven over `tokio::io::duplex` and loopback TCP: every
//! option and command path, error paths, pipelining, out-of-order completion, multi-conn,
//! limits, timeouts and shutdown.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{BrokenExport, Client, SlowExport, duplex_client, greet, info_payload, option};
use dw_nbd::proto::{self, cmd, cmd_flag, errno, info, opt, rep, tflag};
use dw_nbd::{
    BlockSizes, ConnectionEnd, ConnectionError, ExportCatalog, MemoryExport, MemoryExportOptions,
    NbdObserver, NbdServer, RequestKind, ServerConfig, StaticCatalog,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

fn memory(size: u64, options: MemoryExportOptions) -> Arc<MemoryExport> {
    Arc::new(MemoryExport::with_options(size, options).unwrap())
}

fn catalog() -> (Arc<StaticCatalog>, Arc<MemoryExport>) {
    let rw = memory(4 * MIB, MemoryExportOptions::default());
    let ro = Arc::new(
        MemoryExport::from_contents(
            MIB,
            &[0xab; 4096],
            MemoryExportOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let aligned = memory(
        MIB,
        MemoryExportOptions {
            block_sizes: BlockSizes {
                minimum: 512,
                preferred: 4096,
                maximum: 1 << 20,
            },
            ..Default::default()
        },
    );
    let plain = memory(
        MIB,
        MemoryExportOptions {
            can_trim: false,
            can_write_zeroes: false,
            can_flush: false,
            can_multi_conn: false,
            ..Default::default()
        },
    );
    let cat = StaticCatalog::new()
        .with_export("rw", "read-write", rw.clone())
        .with_export("ro", "read-only", ro)
        .with_export("aligned", "512-byte sectors", aligned)
        .with_export("plain", "no extras", plain)
        .with_export(
            "broken",
            "always fails",
            Arc::new(BrokenExport { panic: false }),
        )
        .with_export(
            "panics",
            "panics on read",
            Arc::new(BrokenExport { panic: true }),
        )
        .with_default("rw");
    (Arc::new(cat), rw)
}

fn server(config: ServerConfig) -> (NbdServer, Arc<MemoryExport>) {
    let (cat, rw) = catalog();
    (NbdServer::new(cat, config).unwrap(), rw)
}

#[tokio::test]
async fn go_read_write_flush_trim_zeroes_disc() {
    let (srv, rw) = server(ServerConfig::default());
    let (c, task) = duplex_client(&srv, "rw").await;
    let mut c = c.unwrap();
    assert_eq!(c.size, 4 * MIB);
    let want = tflag::HAS_FLAGS
        | tflag::SEND_FLUSH
        | tflag::SEND_FUA
        | tflag::SEND_TRIM
        | tflag::SEND_WRITE_ZEROES
        | tflag::CAN_MULTI_CONN;
    assert_eq!(c.flags, want);
    assert_eq!(c.block_sizes, Some((1, 4096, 32 << 20)));

    let data = common::pseudo_random(100_000, 1);
    c.write(12345, &data, 0).await.unwrap();
    c.write(0, &[7u8; 10], cmd_flag::FUA).await.unwrap();
    assert!(c.read(12345, 100_000).await.unwrap() == data);
    assert!(rw.to_vec()[12345..112_345] == data[..]);
    assert_eq!(c.command(cmd::FLUSH, 0, 0, 0).await, 0);
    assert_eq!(c.command(cmd::TRIM, 0, 12345, 1000).await, 0);
    assert!(c.read(12345, 1000).await.unwrap() == vec![0u8; 1000]);
    assert_eq!(
        c.command(cmd::WRITE_ZEROES, cmd_flag::NO_HOLE, 20000, 5000)
            .await,
        0
    );
    assert_eq!(
        c.command(cmd::WRITE_ZEROES, cmd_flag::FUA, 25000, 10000)
            .await,
        0
    );
    assert!(c.read(20000, 15000).await.unwrap() == vec![0u8; 15000]);
    // Zero-length requests succeed without touching anything.
    assert_eq!(c.command(cmd::READ, 0, 4 * MIB, 0).await, 0);
    assert_eq!(c.command(cmd::WRITE, 0, 0, 0).await, 0);
    let mut s = c.disconnect().await;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "no reply to NBD_CMD_DISC");
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.end, ConnectionEnd::Disconnected);
    assert_eq!(summary.export.as_deref(), Some("rw"));
    assert_eq!(summary.stats.refused, 0);
    assert!(summary.stats.requests >= 12);
}

#[tokio::test]
async fn errors_change_nothing_and_keep_the_connection() {
    let (srv, rw) = server(ServerConfig {
        max_request_bytes: 1 << 20,
        ..Default::default()
    });
    let (c, task) = duplex_client(&srv, "rw").await;
    let mut c = c.unwrap();
    let before = rw.to_vec();
    let size = c.size;
    // Beyond the end: EINVAL for reads, ENOSPC for writes; offset+length overflow: EINVAL.
    assert_eq!(c.read(size - 10, 11).await, Err(errno::EINVAL));
    assert_eq!(c.read(size + 1, 0).await, Err(errno::EINVAL));
    assert_eq!(c.write(size - 10, &[1u8; 11], 0).await, Err(errno::ENOSPC));
    assert_eq!(
        c.command(cmd::WRITE_ZEROES, 0, size, 1).await,
        errno::ENOSPC
    );
    assert_eq!(c.command(cmd::TRIM, 0, size - 1, 2).await, errno::EINVAL);
    assert_eq!(c.read(u64::MAX - 5, 100).await, Err(errno::EINVAL));
    assert_eq!(
        c.write(u64::MAX - 5, &[1u8; 100], 0).await,
        Err(errno::EINVAL)
    );
    // Larger than the advertised maximum; the write payload is consumed, the stream stays in sync.
    assert_eq!(c.read(0, (1 << 20) + 1).await, Err(errno::EINVAL));
    assert_eq!(
        c.write(0, &vec![1u8; (1 << 20) + 1], 0).await,
        Err(errno::EINVAL)
    );
    // Flags not valid for the command, unknown commands, unsupported commands.
    assert_eq!(
        c.command(cmd::READ, cmd_flag::NO_HOLE, 0, 1).await,
        errno::EINVAL
    );
    assert_eq!(
        c.command(cmd::READ, cmd_flag::DF, 0, 1).await,
        errno::EINVAL
    );
    assert_eq!(
        c.write(0, &[1u8; 8], cmd_flag::FAST_ZERO).await,
        Err(errno::EINVAL)
    );
    assert_eq!(c.command(cmd::CACHE, 0, 0, 1).await, errno::EINVAL);
    assert_eq!(c.command(cmd::BLOCK_STATUS, 0, 0, 1).await, errno::EINVAL);
    assert_eq!(c.command(77, 0, 0, 1).await, errno::EINVAL);
    assert!(rw.to_vec() == before, "refused requests changed the export");
    // Still serving.
    c.write(0, b"ok", 0).await.unwrap();
    assert_eq!(c.read(0, 2).await.unwrap(), b"ok");
    c.disconnect().await;
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.stats.refused, 15);
}

#[tokio::test]
async fn read_only_export_refuses_writes() {
    let (srv, _) = server(ServerConfig::default());
    let (c, _task) = duplex_client(&srv, "ro").await;
    let mut c = c.unwrap();
    assert_ne!(c.flags & tflag::READ_ONLY, 0);
    assert_eq!(
        c.flags & (tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES | tflag::SEND_FUA),
        0
    );
    assert_eq!(c.write(0, &[1u8; 512], 0).await, Err(errno::EPERM));
    assert_eq!(c.command(cmd::TRIM, 0, 0, 512).await, errno::EPERM);
    assert_eq!(c.command(cmd::WRITE_ZEROES, 0, 0, 512).await, errno::EPERM);
    assert!(c.read(0, 4096).await.unwrap() == vec![0xab; 4096]);
    // Flush is harmless on a read-only export and stays advertised.
    assert_eq!(c.command(cmd::FLUSH, 0, 0, 0).await, 0);
}

#[tokio::test]
async fn unadvertised_commands_are_refused() {
    let (srv, _) = server(ServerConfig::default());
    let (c, _task) = duplex_client(&srv, "plain").await;
    let mut c = c.unwrap();
    assert_eq!(c.flags, tflag::HAS_FLAGS);
    assert_eq!(c.command(cmd::FLUSH, 0, 0, 0).await, errno::EINVAL);
    assert_eq!(c.command(cmd::TRIM, 0, 0, 1).await, errno::EINVAL);
    assert_eq!(c.command(cmd::WRITE_ZEROES, 0, 0, 1).await, errno::EINVAL);
    assert_eq!(c.write(0, b"x", cmd_flag::FUA).await, Err(errno::EINVAL));
    c.write(0, b"x", 0).await.unwrap();
}

#[tokio::test]
async fn aligned_export_enforces_minimum_block_size() {
    let (srv, _) = server(ServerConfig::default());
    // GO without asking for block sizes is refused with a reason.
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let srv2 = srv.clone();
    tokio::spawn(async move { srv2.serve_connection(s, "t").await });
    greet(&mut c, 3).await;
    let r = option(&mut c, opt::GO, &info_payload("aligned", &[]))
        .await
        .unwrap();
    assert_eq!(r.last().unwrap().0, rep::ERR_BLOCK_SIZE_REQD);
    // With block sizes requested, unaligned requests get EINVAL.
    let (c, _task) = duplex_client(&srv, "aligned").await;
    let mut c = c.unwrap();
    assert_eq!(c.block_sizes, Some((512, 4096, 1 << 20)));
    assert_eq!(c.read(1, 512).await, Err(errno::EINVAL));
    assert_eq!(c.write(512, &[1u8; 100], 0).await, Err(errno::EINVAL));
    c.write(512, &[1u8; 1024], 0).await.unwrap();
}

#[tokio::test]
async fn export_errors_map_to_nbd_errors_and_panics_become_eio() {
    let (srv, _) = server(ServerConfig::default());
    let (c, _t) = duplex_client(&srv, "broken").await;
    let mut c = c.unwrap();
    assert_eq!(c.read(0, 10).await, Err(errno::EIO));
    assert_eq!(c.write(0, &[0u8; 10], 0).await, Err(errno::ENOSPC));
    assert_eq!(c.command(cmd::FLUSH, 0, 0, 0).await, errno::EIO);
    let (c, _t) = duplex_client(&srv, "panics").await;
    let mut c = c.unwrap();
    assert_eq!(c.read(0, 10).await, Err(errno::EIO));
    assert_eq!(
        c.read(0, 10).await,
        Err(errno::EIO),
        "connection survives a panicking export"
    );
}

#[tokio::test]
async fn options_list_info_unknown_starttls_structured() {
    let (srv, _) = server(ServerConfig::default());
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let srv2 = srv.clone();
    let task = tokio::spawn(async move { srv2.serve_connection(s, "t").await });
    assert_eq!(greet(&mut c, 3).await, 3);
    let list = option(&mut c, opt::LIST, &[]).await.unwrap();
    let names: Vec<String> = list[..list.len() - 1]
        .iter()
        .map(|(t, d)| {
            assert_eq!(*t, rep::SERVER);
            let n = usize::try_from(u32::from_be_bytes(d[..4].try_into().unwrap())).unwrap();
            String::from_utf8(d[4..4 + n].to_vec()).unwrap()
        })
        .collect();
    assert_eq!(names, ["aligned", "broken", "panics", "plain", "ro", "rw"]);
    assert_eq!(list.last().unwrap().0, rep::ACK);
    for (o, payload, want) in [
        (opt::LIST, vec![1u8], rep::ERR_INVALID),
        (opt::STARTTLS, vec![], rep::ERR_UNSUP),
        (opt::STRUCTURED_REPLY, vec![], rep::ERR_UNSUP),
        (opt::SET_META_CONTEXT, vec![0; 8], rep::ERR_INVALID),
        (opt::EXTENDED_HEADERS, vec![], rep::ERR_UNSUP),
        (0xdead_beef, b"whatever".to_vec(), rep::ERR_UNSUP),
        (opt::INFO, info_payload("missing", &[]), rep::ERR_UNKNOWN),
        (opt::GO, vec![0, 0, 0, 50, 1], rep::ERR_INVALID),
    ] {
        let r = option(&mut c, o, &payload).await.unwrap();
        assert_eq!(r.len(), 1, "option {o}");
        assert_eq!(r[0].0, want, "option {o}");
        assert!(!r[0].1.is_empty(), "error for option {o} has a message");
    }
    // Oversized option: drained, answered TOO_BIG, session continues.
    let r = option(&mut c, 999, &vec![0u8; 100_000]).await.unwrap();
    assert_eq!(r[0].0, rep::ERR_TOO_BIG);
    let r = option(
        &mut c,
        opt::INFO,
        &info_payload(
            "rw",
            &[info::NAME, info::DESCRIPTION, info::BLOCK_SIZE, 999],
        ),
    )
    .await
    .unwrap();
    let kinds: Vec<u16> = r[..r.len() - 1]
        .iter()
        .map(|(_, d)| u16::from_be_bytes([d[0], d[1]]))
        .collect();
    assert_eq!(
        kinds,
        [
            info::EXPORT,
            info::NAME,
            info::DESCRIPTION,
            info::BLOCK_SIZE
        ]
    );
    assert_eq!(&r[2].1[2..], b"read-write");
    let r = option(&mut c, opt::ABORT, &[]).await.unwrap();
    assert_eq!(r[0].0, rep::ACK);
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.end, ConnectionEnd::Aborted);
    assert_eq!(summary.export, None);
}

#[tokio::test]
async fn export_name_option_enters_transmission() {
    let (srv, _) = server(ServerConfig::default());
    for (client_flags, expect_len) in [(3u32, 10usize), (1, 134)] {
        let (mut c, s) = tokio::io::duplex(1 << 16);
        let srv2 = srv.clone();
        tokio::spawn(async move { srv2.serve_connection(s, "t").await });
        greet(&mut c, client_flags).await;
        c.write_all(&proto::encode_option_header(opt::EXPORT_NAME, 2))
            .await
            .unwrap();
        c.write_all(b"rw").await.unwrap();
        let mut reply = vec![0u8; expect_len];
        c.read_exact(&mut reply).await.unwrap();
        assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 4 * MIB);
        assert!(reply[10..].iter().all(|&b| b == 0));
        // Transmission works.
        let h = proto::RequestHeader {
            flags: 0,
            command: cmd::READ,
            handle: 9,
            offset: 0,
            length: 4,
        };
        c.write_all(&proto::encode_request_header(&h))
            .await
            .unwrap();
        let mut r = [0u8; 20];
        c.read_exact(&mut r).await.unwrap();
        let rep = proto::parse_simple_reply(&r[..16]).unwrap();
        assert_eq!((rep.error, rep.handle), (0, 9));
    }
    // Unknown export with EXPORT_NAME: the server can only hang up.
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let srv2 = srv.clone();
    let task = tokio::spawn(async move { srv2.serve_connection(s, "t").await });
    greet(&mut c, 3).await;
    c.write_all(&proto::encode_option_header(opt::EXPORT_NAME, 4))
        .await
        .unwrap();
    c.write_all(b"nope").await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(matches!(
        task.await.unwrap(),
        Err(ConnectionError::Negotiate(_))
    ));
}

#[tokio::test]
async fn non_fixed_newstyle_and_bad_client_flags_are_dropped() {
    let (srv, _) = server(ServerConfig::default());
    for flags in [0u32, 2, 4, 0xffff_ffff] {
        let (mut c, s) = tokio::io::duplex(1 << 16);
        let srv2 = srv.clone();
        let task = tokio::spawn(async move { srv2.serve_connection(s, "t").await });
        greet(&mut c, flags).await;
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "flags {flags:#x}");
        assert!(task.await.unwrap().is_err(), "flags {flags:#x}");
    }
}

#[tokio::test]
async fn bad_request_magic_disconnects() {
    let (srv, _) = server(ServerConfig::default());
    let (c, task) = duplex_client(&srv, "rw").await;
    let mut c = c.unwrap();
    let mut junk = proto::encode_request_header(&proto::RequestHeader {
        flags: 0,
        command: cmd::READ,
        handle: 1,
        offset: 0,
        length: 1,
    });
    junk[0] = 0;
    c.s.write_all(&junk).await.unwrap();
    let mut rest = Vec::new();
    c.s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(matches!(
        task.await.unwrap(),
        Err(ConnectionError::Transmission { .. })
    ));
}

#[tokio::test]
async fn huge_write_payload_disconnects_instead_of_buffering() {
    let (srv, rw) = server(ServerConfig::default());
    let (c, task) = duplex_client(&srv, "rw").await;
    let mut c = c.unwrap();
    c.send(cmd::WRITE, 0, 0, u32::MAX, &[1u8; 1000]).await;
    let mut rest = Vec::new();
    let _ = c.s.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert!(task.await.unwrap().is_err());
    assert_eq!(rw.allocated_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_complete_out_of_order() {
    // The read at offset 0 is held until the other three are answered: held, not timed, so a
    // loaded machine cannot reorder it.
    let slow = Arc::new(SlowExport::new(MIB, HashMap::new()));
    slow.hold(0);
    let cat = Arc::new(StaticCatalog::new().with_export("slow", "", slow.clone()));
    let srv = NbdServer::new(cat, ServerConfig::default()).unwrap();
    let (c, _t) = duplex_client(&srv, "slow").await;
    let mut c = c.unwrap();
    let h1 = c.send(cmd::READ, 0, 0, 512, &[]).await;
    let h2 = c.send(cmd::READ, 0, 4096, 512, &[]).await;
    let h3 = c.send(cmd::WRITE, 0, 8192, 3, b"abc").await;
    let h4 = c.send(cmd::READ, 0, 1 << 30, 1, &[]).await; // refused immediately
    let mut order = Vec::new();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(30), c.reply())
            .await
            .expect("the other requests wait behind the held read")
            .unwrap();
        assert_ne!(r.handle, h1, "the held read was answered");
        order.push(r);
    }
    slow.release();
    order.push(c.reply().await.unwrap());
    assert_eq!(order.last().unwrap().handle, h1, "{order:?}");
    let mut handles: Vec<u64> = order.iter().map(|r| r.handle).collect();
    handles.sort_unstable();
    assert_eq!(handles, vec![h1, h2, h3, h4]);
    assert_eq!(
        order.iter().find(|r| r.handle == h4).unwrap().error,
        errno::EINVAL
    );
    assert_eq!(
        order.iter().find(|r| r.handle == h1).unwrap().data.len(),
        512
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_run_in_parallel_on_io_threads() {
    // Eight reads that each block 200 ms: with 8 I/O threads they overlap.
    let delays: HashMap<u64, Duration> = (0..8u64)
        .map(|i| (i * 4096, Duration::from_millis(200)))
        .collect();
    let slow = Arc::new(SlowExport::new(MIB, delays));
    let cat = Arc::new(StaticCatalog::new().with_export("s", "", slow.clone()));
    let srv = NbdServer::new(cat, ServerConfig::default()).unwrap();
    let (c, _t) = duplex_client(&srv, "s").await;
    let mut c = c.unwrap();
    let batch: Vec<_> = (0..8u64).map(|i| (cmd::READ, 0, i * 4096, 4096)).collect();
    c.send_batch(&batch).await;
    for _ in 0..8 {
        assert_eq!(c.reply().await.unwrap().error, 0);
    }
    // Counted inside the export rather than timed, so a loaded machine cannot fail it: one
    // request at a time would never have two asleep together.
    let overlap = slow.max_sleeping.load(Ordering::SeqCst);
    assert!(overlap >= 4, "at most {overlap} of 8 slow reads overlapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_covers_completed_writes() {
    let slow = Arc::new(SlowExport::new(MIB, HashMap::new()));
    let cat = Arc::new(StaticCatalog::new().with_export("s", "", slow.clone()));
    let srv = NbdServer::new(cat, ServerConfig::default()).unwrap();
    let (c, _t) = duplex_client(&srv, "s").await;
    let mut c = c.unwrap();
    for i in 0..8u64 {
        c.write(i * 4096, &[1u8; 4096], 0).await.unwrap();
    }
    assert_eq!(c.command(cmd::FLUSH, 0, 0, 0).await, 0);
    let log = slow.log.lock().clone();
    assert_eq!(log.len(), 9);
    assert_eq!(log.last().unwrap(), "flush", "{log:?}");
    c.write(0, &[2u8; 10], cmd_flag::FUA).await.unwrap();
    assert_eq!(slow.log.lock().last().unwrap(), "write 0 fua=true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_are_bounded() {
    // Every read sleeps; with at most 4 in flight the server must not start a fifth before
    // one finishes.
    let delays: HashMap<u64, Duration> = (0..32u64)
        .map(|i| (i * 4096, Duration::from_millis(50)))
        .collect();
    let slow = Arc::new(SlowExport::new(MIB, delays));
    let cat = Arc::new(StaticCatalog::new().with_export("s", "", slow.clone()));
    let srv = NbdServer::new(
        cat,
        ServerConfig {
            max_in_flight_per_connection: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let (c, _t) = duplex_client(&srv, "s").await;
    let mut c = c.unwrap();
    for i in 0..32u64 {
        c.send(cmd::READ, 0, i * 4096, 4096, &[]).await;
    }
    for _ in 0..32 {
        assert_eq!(c.reply().await.unwrap().error, 0);
    }
    // Counted inside the export: with eight I/O threads and no bound, up to eight would sleep
    // at once.
    let most = slow.max_sleeping.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&most),
        "{most} reads in the export at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_see_each_others_writes() {
    let (srv, rw) = server(ServerConfig::default());
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, _t) = duplex_client(&srv, "rw").await;
        clients.push(c.unwrap());
    }
    // Each connection writes its own stripe, pipelined, then flushes.
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let i = u64::try_from(i).unwrap();
            for k in 0..64u64 {
                let off = (k * 4 + i) * 4096;
                let byte = u8::try_from(i + 1).unwrap();
                c.send(cmd::WRITE, 0, off, 4096, &[byte; 4096]).await;
            }
            for _ in 0..64 {
                assert_eq!(c.reply().await.unwrap().error, 0);
            }
            assert_eq!(c.command(cmd::FLUSH, 0, 0, 0).await, 0);
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    // Every connection reads back every other connection's stripes.
    for c in &mut clients {
        let all = c.read(0, 256 * 4096).await.unwrap();
        for (block, chunk) in all.chunks(4096).enumerate() {
            let want = u8::try_from(block % 4 + 1).unwrap();
            assert!(chunk.iter().all(|&b| b == want), "block {block}");
        }
    }
    assert!(rw.to_vec()[..256 * 4096] == clients[0].read(0, 256 * 4096).await.unwrap()[..]);
}

#[derive(Default)]
struct Counting {
    connects: AtomicU64,
    opened: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
    disconnects: AtomicU64,
    refused: AtomicU64,
    reads: AtomicU64,
}

impl NbdObserver for Counting {
    fn on_connect(&self, _peer: &str) {
        self.connects.fetch_add(1, Ordering::SeqCst);
    }
    fn on_refused(&self, _peer: &str, _reason: dw_nbd::RefuseReason) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }
    fn on_export_opened(&self, _peer: &str, export: &str) {
        assert_eq!(export, "rw");
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn on_request(
        &self,
        export: &str,
        kind: RequestKind,
        _bytes: u64,
        latency: Duration,
        ok: bool,
    ) {
        assert_eq!(export, "rw");
        assert!(latency < Duration::from_secs(10));
        self.requests.fetch_add(1, Ordering::SeqCst);
        if kind == RequestKind::Read {
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
        if !ok {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn on_disconnect(&self, _peer: &str, export: Option<&str>) {
        assert_eq!(export, Some("rw"));
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn observer_sees_requests() {
    let (cat, _) = catalog();
    let obs = Arc::new(Counting::default());
    let srv = NbdServer::new(cat, ServerConfig::default())
        .unwrap()
        .with_observer(obs.clone());
    let (c, task) = duplex_client(&srv, "rw").await;
    let mut c = c.unwrap();
    c.read(0, 10).await.unwrap();
    c.write(0, b"x", 0).await.unwrap();
    assert_eq!(c.read(u64::MAX, 1).await, Err(errno::EINVAL));
    c.disconnect().await;
    task.await.unwrap().unwrap();
    assert_eq!(obs.connects.load(Ordering::SeqCst), 1);
    assert_eq!(obs.opened.load(Ordering::SeqCst), 1);
    assert_eq!(obs.requests.load(Ordering::SeqCst), 3);
    assert_eq!(obs.reads.load(Ordering::SeqCst), 2);
    assert_eq!(obs.failed.load(Ordering::SeqCst), 1);
    assert_eq!(obs.disconnects.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn handshake_and_idle_timeouts() {
    let (srv, _) = server(ServerConfig {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    });
    // A client that never sends its flags.
    let (mut c, s) = tokio::io::duplex(1 << 16);
    let srv2 = srv.clone();
    let task = tokio::spawn(async move { srv2.serve_connection(s, "t").await });
    let mut g = [0u8; 18];
    c.read_exact(&mut g).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(matches!(
        task.await.unwrap(),
        Err(ConnectionError::HandshakeTimeout(_))
    ));
    // A client that goes quiet in transmission; activity postpones the timeout.
    let (c, task) = duplex_client(&srv, "rw").await;
    let mut c = c.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.read(0, 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.read(0, 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.end, ConnectionEnd::IdleTimeout);
    assert_eq!(summary.stats.requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_shutdown_over_tcp() {
    let (cat, _) = catalog();
    let obs = Arc::new(Counting::default());
    let srv = NbdServer::new(
        cat as Arc<dyn ExportCatalog>,
        ServerConfig {
            max_connections: 2,
            ..Default::default()
        },
    )
    .unwrap()
    .with_observer(obs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let srv2 = srv.clone();
    let serving = tokio::spawn(async move {
        srv2.serve(listener, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let connect = || async move { tokio::net::TcpStream::connect(addr).await.unwrap() };
    let mut a = Client::connect(connect().await, "rw").await.unwrap();
    let b = Client::connect(connect().await, "rw").await.unwrap();
    // The third is told why, during negotiation.
    let err = Client::connect(connect().await, "rw").await.err().unwrap();
    assert_eq!(err.0, rep::ERR_POLICY);
    assert!(err.1.contains("too many connections"), "{}", err.1);
    assert_eq!(obs.refused.load(Ordering::SeqCst), 1);
    // Closing one frees a slot.
    b.disconnect().await;
    let mut c = None;
    for _ in 0..100 {
        match Client::connect(connect().await, "rw").await {
            Ok(client) => {
                c = Some(client);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut c = c.expect("slot was not freed");
    c.write(0, b"hello", 0).await.unwrap();
    assert_eq!(a.read(0, 5).await.unwrap(), b"hello");
    // Shutdown: serve returns and clients see the connection close.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    a.s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(srv.is_shutting_down());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn unix_socket_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nbd.sock");
    let (srv, _) = server(ServerConfig::default());
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let srv2 = srv.clone();
    let serving = tokio::spawn(async move { srv2.serve(listener, std::future::pending()).await });
    let mut c = Client::connect(tokio::net::UnixStream::connect(&path).await.unwrap(), "")
        .await
        .unwrap();
    assert_eq!(c.size, 4 * MIB, "empty name selects the default export");
    c.write(100, b"unix", 0).await.unwrap();
    assert_eq!(c.read(100, 4).await.unwrap(), b"unix");
    srv.begin_shutdown();
    serving.await.unwrap().unwrap();
}

#[test]
fn config_validation() {
    let ok = ServerConfig::default();
    assert!(ok.validate().is_ok());
    for bad in [
        ServerConfig {
            max_connections: 0,
            ..ok.clone()
        },
        ServerConfig {
            max_request_bytes: 1000,
            ..ok.clone()
        },
        ServerConfig {
            max_request_bytes: 128 << 20,
            max_in_flight_bytes_per_connection: 1 << 30,
            ..ok.clone()
        },
        ServerConfig {
            max_in_flight_per_connection: 0,
            ..ok.clone()
        },
        ServerConfig {
            max_in_flight_bytes_per_connection: 1 << 20,
            ..ok.clone()
        },
        ServerConfig {
            handshake_timeout: Duration::ZERO,
            ..ok.clone()
        },
        ServerConfig {
            idle_timeout: Some(Duration::ZERO),
            ..ok.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
        let (cat, _) = catalog();
        assert!(NbdServer::new(cat, bad).is_err());
    }
}
