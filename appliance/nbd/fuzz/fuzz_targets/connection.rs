//! A whole connection over an in-memory duplex stream against a MemoryExport.
//!
//! Even first byte: the rest is the raw client byte stream (with first byte % 4 == 2, every
//! request runs on the server's I/O threads). Odd: the rest describes a well-formed
//! negotiation followed by requests (many of them hostile); the harness then parses the
//! server's replies and checks them against a model of the export: reads beyond the end
//! never succeed, successful reads return exactly what accepted writes left there, and
//! refused requests change nothing (all requests run inline, hence in order). In both modes
//! the export records any access outside its size (the server must have refused it) and
//! nothing may panic.
#![no_main]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use dw_nbd::proto::{self, RequestHeader, cmd, cmd_flag, info, opt};
use dw_nbd::{
    BlockExport, ExportCatalog, ExportError, ExportInfo, MemoryExport, NbdServer, ServerConfig,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// Small, so the per-run model comparison stays cheap under the sanitizer.
const SIZE: u64 = 256 << 10;
const MAX_REQUEST: u32 = 128 * 1024;

/// A MemoryExport that notes any out-of-range call instead of panicking (a panic would be
/// caught by the server and turned into EIO, hiding the bug).
struct Checked {
    inner: MemoryExport,
    violation: AtomicBool,
    /// 0 sends every request through the server's I/O threads.
    inline: u32,
}

impl Checked {
    fn check(&self, offset: u64, len: u64) {
        if offset.checked_add(len).is_none_or(|end| end > SIZE) {
            self.violation.store(true, Ordering::SeqCst);
        }
    }
}

impl BlockExport for Checked {
    fn size(&self) -> u64 {
        SIZE
    }
    fn can_trim(&self) -> bool {
        true
    }
    fn can_write_zeroes(&self) -> bool {
        true
    }
    fn inline_io_limit(&self) -> u32 {
        self.inline
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ExportError> {
        self.check(offset, buf.len() as u64);
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), ExportError> {
        self.check(offset, data.len() as u64);
        self.inner.write(offset, data, fua)
    }
    fn flush(&self) -> Result<(), ExportError> {
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), ExportError> {
        self.check(offset, len);
        self.inner.trim(offset, len, fua)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fua: bool,
    ) -> Result<(), ExportError> {
        self.check(offset, len);
        self.inner.write_zeroes(offset, len, may_trim, fua)
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Serves whichever export the current run installed, so one server (and one set of I/O
/// threads) lives for the whole fuzzing process.
#[derive(Default)]
struct CurrentExport(std::sync::Mutex<Option<Arc<Checked>>>);

impl ExportCatalog for CurrentExport {
    fn list(&self) -> Vec<ExportInfo> {
        vec![ExportInfo {
            name: "vol".into(),
            description: "fuzz".into(),
        }]
    }
    fn open(&self, name: &str) -> Option<Arc<dyn BlockExport>> {
        let current = self.0.lock().unwrap().clone()?;
        (name.is_empty() || name == "vol").then_some(current as Arc<dyn BlockExport>)
    }
}

fn server() -> &'static (Arc<CurrentExport>, NbdServer) {
    static SERVER: OnceLock<(Arc<CurrentExport>, NbdServer)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let catalog = Arc::new(CurrentExport::default());
        let config = ServerConfig {
            max_request_bytes: MAX_REQUEST,
            ..Default::default()
        };
        let server =
            NbdServer::new(Arc::clone(&catalog) as Arc<dyn ExportCatalog>, config).unwrap();
        (catalog, server)
    })
}

/// Runs one connection with `script` as everything the client sends; returns what the
/// server sent.
fn run(script: &[u8], export: Arc<Checked>) -> Vec<u8> {
    let (catalog, server) = server();
    *catalog.0.lock().unwrap() = Some(export);
    let server = server.clone();
    runtime().block_on(async move {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move { server.serve_connection(server_side, "fuzz").await });
        let (mut rd, mut wr) = tokio::io::split(client);
        let writer = async {
            let _ = wr.write_all(script).await;
            let _ = wr.shutdown().await;
        };
        let reader = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let ((), out) = tokio::join!(writer, reader);
        let _ = task.await.expect("connection task panicked");
        out
    })
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Copy)]
struct Sent {
    command: u16,
    offset: u64,
    length: u32,
    fill: u8,
}

fn structured(mut input: Bytes<'_>) {
    let mut script = Vec::new();
    script.extend_from_slice(&3u32.to_be_bytes());
    // A few harmless options before GO.
    for _ in 0..(input.u8() % 4) {
        let o = [opt::LIST, opt::STRUCTURED_REPLY, opt::STARTTLS, 77][usize::from(input.u8() % 4)];
        script.extend_from_slice(&proto::encode_option_header(o, 0));
    }
    let mut go = Vec::new();
    go.extend_from_slice(&3u32.to_be_bytes());
    go.extend_from_slice(b"vol");
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    script.extend_from_slice(&proto::encode_option_header(opt::GO, go.len() as u32));
    script.extend_from_slice(&go);
    let mut sent: HashMap<u64, Sent> = HashMap::new();
    let mut order = Vec::new();
    let mut handle = 0u64;
    while !input.is_empty() && order.len() < 64 {
        handle += 1;
        let kind = input.u8();
        let command = match kind % 8 {
            0 | 1 => cmd::READ,
            2 | 3 => cmd::WRITE,
            4 => cmd::TRIM,
            5 => cmd::WRITE_ZEROES,
            6 => cmd::FLUSH,
            // Any other code, except DISC (which would end the script early).
            _ => match u16::from(input.u8()) {
                cmd::DISC => 200,
                c => c,
            },
        };
        // Offsets cluster around the start and the end of the export.
        let offset = match input.u8() % 4 {
            0 => u64::from(input.u32() % 65536),
            1 => SIZE - u64::from(input.u32() % 65536),
            2 => SIZE + u64::from(input.u8()),
            _ => u64::MAX - u64::from(input.u8()),
        };
        let length = match input.u8() % 8 {
            7 => MAX_REQUEST + u32::from(input.u8()),
            6 => input.u32() % 65536,
            _ => input.u32() % 8192,
        };
        let flags = if kind & 0x80 != 0 {
            u16::from(input.u8())
        } else if kind & 0x40 != 0 {
            cmd_flag::FUA
        } else {
            0
        };
        let fill = input.u8();
        script.extend_from_slice(&proto::encode_request_header(&RequestHeader {
            flags,
            command,
            handle,
            offset,
            length,
        }));
        if command == cmd::WRITE {
            script.extend(std::iter::repeat_n(fill, length as usize));
        }
        // Flush runs on the blocking pool; keep the model simple by not reordering writes
        // around it (a flush changes no data anyway).
        sent.insert(
            handle,
            Sent {
                command,
                offset,
                length,
                fill,
            },
        );
        order.push(handle);
    }
    script.extend_from_slice(&proto::encode_request_header(&RequestHeader {
        flags: 0,
        command: cmd::DISC,
        handle: 0,
        offset: 0,
        length: 0,
    }));

    let export = Arc::new(Checked {
        inner: MemoryExport::new(SIZE).unwrap(),
        violation: AtomicBool::new(false),
        // Everything inline keeps the execution order equal to the request order, which
        // the model below relies on.
        inline: 256 * 1024,
    });
    let out = run(&script, Arc::clone(&export));
    assert!(
        !export.violation.load(Ordering::SeqCst),
        "export accessed out of range"
    );

    // Skip the handshake replies: greeting, option replies, GO replies up to the ACK.
    let mut at = proto::GREETING_LEN;
    loop {
        let Some(h) = out.get(at..at + proto::OPTION_REPLY_HEADER_LEN) else {
            panic!("server output ended during negotiation");
        };
        let h = proto::parse_option_reply_header(h).expect("bad option reply");
        at += proto::OPTION_REPLY_HEADER_LEN + h.length as usize;
        if h.option == opt::GO && h.reply_type == proto::rep::ACK {
            break;
        }
        assert!(
            h.option != opt::GO || h.reply_type == proto::rep::INFO,
            "GO failed"
        );
    }
    // Parse replies.
    let mut replies: HashMap<u64, (u32, Vec<u8>)> = HashMap::new();
    while at < out.len() {
        let r = proto::parse_simple_reply(&out[at..at + proto::SIMPLE_REPLY_LEN])
            .expect("bad reply magic");
        at += proto::SIMPLE_REPLY_LEN;
        let s = sent.get(&r.handle).expect("reply for a handle never sent");
        let mut data = Vec::new();
        if s.command == cmd::READ && r.error == 0 {
            data = out[at..at + s.length as usize].to_vec();
            at += s.length as usize;
        }
        assert!(
            replies.insert(r.handle, (r.error, data)).is_none(),
            "two replies for one handle"
        );
    }
    assert_eq!(replies.len(), order.len(), "not every request was answered");
    // Replay in request order against a flat model.
    let mut model = vec![0u8; SIZE as usize];
    for h in order {
        let s = sent[&h];
        let (error, data) = &replies[&h];
        // Flush ignores offset and length (the protocol reserves them).
        let in_range = s.command == cmd::FLUSH
            || s.offset
                .checked_add(u64::from(s.length))
                .is_some_and(|e| e <= SIZE);
        if !in_range {
            assert_ne!(*error, 0, "out-of-range command {} succeeded", s.command);
            continue;
        }
        if *error != 0 {
            continue;
        }
        let (o, l) = (s.offset as usize, s.length as usize);
        match s.command {
            cmd::READ => assert!(data[..] == model[o..o + l], "read returned wrong data"),
            cmd::WRITE => model[o..o + l].fill(s.fill),
            cmd::TRIM | cmd::WRITE_ZEROES => model[o..o + l].fill(0),
            cmd::FLUSH => {}
            other => panic!("unknown command {other} succeeded"),
        }
    }
    assert!(
        export.inner.to_vec() == model,
        "export differs from the model"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let export = Arc::new(Checked {
            inner: MemoryExport::new(SIZE).unwrap(),
            violation: AtomicBool::new(false),
            // Half of the raw inputs run every request on the I/O threads.
            inline: if mode % 4 == 0 { 256 * 1024 } else { 0 },
        });
        let _ = run(rest, Arc::clone(&export));
        assert!(
            !export.violation.load(Ordering::SeqCst),
            "export accessed out of range"
        );
    } else {
        structured(Bytes(rest));
    }
});
