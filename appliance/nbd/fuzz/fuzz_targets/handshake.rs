//! Option parsing and the negotiation state machine: arbitrary option sequences must never
//! panic, every reply must be well-formed, and only GO / EXPORT_NAME on a known export may
//! enter transmission.
#![no_main]

use std::sync::{Arc, OnceLock};

use dw_nbd::handshake::{Negotiation, OptionAction};
use dw_nbd::proto::{self, ClientFlags, opt, rep};
use dw_nbd::{BlockSizes, ExportCatalog, MemoryExport, MemoryExportOptions, StaticCatalog};
use libfuzzer_sys::fuzz_target;

fn catalog() -> Arc<dyn ExportCatalog> {
    static CATALOG: OnceLock<Arc<dyn ExportCatalog>> = OnceLock::new();
    Arc::clone(CATALOG.get_or_init(|| {
        let plain = Arc::new(MemoryExport::new(1 << 20).unwrap());
        let aligned = Arc::new(
            MemoryExport::with_options(
                1 << 20,
                MemoryExportOptions {
                    block_sizes: BlockSizes {
                        minimum: 4096,
                        preferred: 4096,
                        maximum: 1 << 20,
                    },
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        Arc::new(
            StaticCatalog::new()
                .with_export("a", "first", plain)
                .with_export("b", "aligned", aligned)
                .with_default("a"),
        )
    }))
}

/// Checks that `out` is a sequence of option replies to `option`.
fn check_replies(option: u32, out: &[u8]) {
    let mut at = 0;
    while at < out.len() {
        let header =
            proto::parse_option_reply_header(&out[at..at + proto::OPTION_REPLY_HEADER_LEN])
                .expect("malformed option reply header");
        assert_eq!(header.option, option, "reply to the wrong option");
        let len = header.length as usize;
        assert!(len <= 4 + 2 * proto::MAX_STRING_LEN + 16, "oversized reply");
        at += proto::OPTION_REPLY_HEADER_LEN + len;
        assert!(at <= out.len(), "reply length points past the output");
        if header.reply_type & rep::ERROR_BIT == 0 {
            assert!(matches!(
                header.reply_type,
                rep::ACK | rep::SERVER | rep::INFO
            ));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw parsers first.
    let _ = proto::parse_option_header(data);
    let _ = proto::parse_info_request(data);
    let _ = proto::parse_export_name(data);
    if data.len() < 4 {
        return;
    }
    let flags = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let client = match proto::parse_client_flags(flags) {
        Ok(c) => c,
        Err(_) => ClientFlags {
            fixed_newstyle: true,
            no_zeroes: flags & 1 == 0,
        },
    };
    let mut negotiation = Negotiation::new(catalog(), client, 1 << 20);
    let mut rest = &data[4..];
    let mut out = Vec::new();
    // Each option: 1 byte selecting the code, 2 bytes of payload length, payload.
    while rest.len() >= 3 {
        let code = match rest[0] % 14 {
            12 => u32::from(rest[1]) << 24,
            13 => u32::MAX,
            n => u32::from(n),
        };
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let _ = proto::parse_option_header(payload);
        out.clear();
        match negotiation.handle_option(code, payload, &mut out) {
            OptionAction::Continue => check_replies(code, &out),
            OptionAction::Close => {
                assert_eq!(code, opt::ABORT);
                check_replies(code, &out);
                return;
            }
            OptionAction::Disconnect(_) => {
                assert!(code == opt::EXPORT_NAME, "only EXPORT_NAME may hang up");
                assert!(out.is_empty());
                return;
            }
            OptionAction::Transmit(t) => {
                assert!(code == opt::GO || code == opt::EXPORT_NAME);
                assert!(catalog().open(&t.name).is_some());
                assert!(t.limits.max_payload <= 1 << 20);
                assert!(t.limits.max_payload % t.limits.minimum == 0);
                if code == opt::GO {
                    check_replies(code, &out);
                } else {
                    assert_eq!(out.len(), if client.no_zeroes { 10 } else { 134 });
                }
                return;
            }
        }
    }
});
