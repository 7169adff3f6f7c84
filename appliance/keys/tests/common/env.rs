//! The one place these test binaries touch the process environment.
#![allow(unsafe_code)]

/// Silences tpm2-tss's own stderr logging. Must be called first thing in `main`, before any
/// thread exists.
pub fn quiet_tss_logging() {
    if std::env::var_os("TSS2_LOG").is_none() {
        // SAFETY: called at the start of `main` of a `harness = false` test binary, before any
        // other thread is spawned, so nothing can read the environment concurrently.
        unsafe { std::env::set_var("TSS2_LOG", "all+none") };
    }
}
