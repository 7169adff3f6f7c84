//! Shared pieces of the appliance benchmarks: timing, throughput formatting, and ISA-L as a
//! run-time-loaded baseline. Every result is reported as a ratio to a baseline measured in the
//! same run, never as an absolute target.

pub mod isal;

use std::time::{Duration, Instant};

/// Repeats `f` (which processes `bytes` bytes per call) until `min` has passed and returns
/// bytes per second. One untimed warm-up call first.
pub fn rate(bytes: u64, min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min || n < 3 {
        f();
        n += 1;
    }
    per_sec(bytes * n, start.elapsed())
}

/// `amount / elapsed` as a float.
#[must_use]
pub fn per_sec(amount: u64, elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let a = amount as f64;
    a / elapsed.as_secs_f64().max(1e-9)
}

/// Bytes per second as GB/s (decimal, as storage vendors and fio report).
#[must_use]
pub fn gbs(v: f64) -> String {
    format!("{:.2}", v / 1e9)
}

/// A ratio as a percentage.
#[must_use]
pub fn pct(a: f64, b: f64) -> String {
    if b <= 0.0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * a / b)
    }
}

/// Fills a buffer with pseudo-random bytes (fast xorshift; contents only need to be
/// incompressible and non-zero).
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}
