//! Golden wire transcript: a fixed client script and the exact bytes the server answers.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p dw-nbd --test golden` after an intended
//! change to the wire format, and review the diff of the `.hex` file.

use std::path::PathBuf;
use std::sync::Arc;

use dw_nbd::proto::{self, RequestHeader, cmd, info, opt};
use dw_nbd::{MemoryExport, MemoryExportOptions, NbdServer, ServerConfig, StaticCatalog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:06x}  {}\n", i * 16, hex.join(" "))
        })
        .collect()
}

fn option(script: &mut Vec<u8>, option: u32, payload: &[u8]) {
    script.extend_from_slice(&proto::encode_option_header(
        option,
        u32::try_from(payload.len()).unwrap(),
    ));
    script.extend_from_slice(payload);
}

fn info_payload(name: &str, reqs: &[u16]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&u16::try_from(reqs.len()).unwrap().to_be_bytes());
    for r in reqs {
        p.extend_from_slice(&r.to_be_bytes());
    }
    p
}

fn request(script: &mut Vec<u8>, command: u16, flags: u16, handle: u64, offset: u64, length: u32) {
    script.extend_from_slice(&proto::encode_request_header(&RequestHeader {
        flags,
        command,
        handle,
        offset,
        length,
    }));
}

#[tokio::test]
async fn handshake_and_transmission_transcript() {
    let contents: Vec<u8> = (0u8..=255).collect();
    let vol = Arc::new(
        MemoryExport::from_contents(1 << 20, &contents, MemoryExportOptions::default()).unwrap(),
    );
    let cat = Arc::new(
        StaticCatalog::new()
            .with_export("vol", "golden volume", vol)
            .with_default("vol"),
    );
    let server = NbdServer::new(cat, ServerConfig::default()).unwrap();

    let mut script = Vec::new();
    script.extend_from_slice(&3u32.to_be_bytes());
    option(&mut script, opt::LIST, &[]);
    option(&mut script, opt::STRUCTURED_REPLY, &[]);
    option(&mut script, opt::STARTTLS, &[]);
    option(&mut script, 0x1234, b"?");
    option(&mut script, opt::INFO, &info_payload("nope", &[]));
    option(
        &mut script,
        opt::INFO,
        &info_payload("vol", &[info::NAME, info::DESCRIPTION, info::BLOCK_SIZE]),
    );
    option(&mut script, opt::GO, &info_payload("", &[info::BLOCK_SIZE]));
    request(&mut script, cmd::READ, 0, 1, 250, 10);
    request(&mut script, cmd::WRITE, 0, 2, 0, 4);
    script.extend_from_slice(b"GOLD");
    request(&mut script, cmd::READ, 0, 3, 0, 6);
    request(&mut script, cmd::READ, 0, 4, 1 << 20, 1);
    request(&mut script, cmd::WRITE, 0, 5, (1 << 20) - 1, 2);
    script.extend_from_slice(b"xx");
    request(&mut script, cmd::CACHE, 0, 6, 0, 1);
    // Flush runs on the blocking pool; as the last request its reply is last, so the
    // transcript is deterministic.
    request(&mut script, cmd::FLUSH, 0, 7, 0, 0);
    request(&mut script, cmd::DISC, 0, 8, 0, 0);

    let (mut client, server_side) = tokio::io::duplex(1 << 20);
    let task = tokio::spawn(async move { server.serve_connection(server_side, "golden").await });
    client.write_all(&script).await.unwrap();
    let mut transcript = Vec::new();
    client.read_to_end(&mut transcript).await.unwrap();
    task.await.unwrap().unwrap();

    let hex = hex_lines(&transcript);
    let bin_path = golden_path("transcript.bin");
    let hex_path = golden_path("transcript.hex");
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(bin_path.parent().unwrap()).unwrap();
        std::fs::write(&bin_path, &transcript).unwrap();
        std::fs::write(&hex_path, &hex).unwrap();
        eprintln!("updated {}", bin_path.display());
    }
    let golden = std::fs::read(&bin_path)
        .expect("golden transcript missing: run with UPDATE_GOLDEN=1 to create it");
    assert!(
        golden == transcript,
        "wire transcript changed; got:\n{hex}\nexpected:\n{}",
        hex_lines(&golden)
    );
    // Spot checks that do not depend on the golden file.
    assert_eq!(&transcript[..8], b"NBDMAGIC");
    assert!(
        transcript
            .windows(10)
            .any(|w| w == [250, 251, 252, 253, 254, 255, 0, 0, 0, 0]),
        "read of offset 250 missing"
    );
    assert!(transcript.windows(6).any(|w| w == *b"GOLD\x04\x05"));
}
