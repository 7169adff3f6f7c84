//! Every request body type of the management API, and the parsers behind them (policies, sizes,
//! the configuration file), on arbitrary bytes: they must decode or refuse, never panic.

#![no_main]

use dw_api::types as t;
use libfuzzer_sys::fuzz_target;

fn parse<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice(data).ok()
}

fuzz_target!(|data: &[u8]| {
    let _ = parse::<t::LoginRequest>(data);
    let _ = parse::<t::CreateUserRequest>(data);
    let _ = parse::<t::SetPasswordRequest>(data);
    let _ = parse::<t::CreateTokenRequest>(data);
    let _ = parse::<t::CreateS3KeyRequest>(data);
    let _ = parse::<t::GrantRequest>(data);
    let _ = parse::<t::PlanRequest>(data);
    let _ = parse::<t::CreateArrayRequest>(data);
    let _ = parse::<t::AddSpareRequest>(data);
    let _ = parse::<t::ReplaceRequest>(data);
    let _ = parse::<t::FailMemberRequest>(data);
    let _ = parse::<t::ScrubRequest>(data);
    let _ = parse::<t::ThrottleRequest>(data);
    let _ = parse::<t::CreateVdeRequest>(data);
    let _ = parse::<t::UnlockRequest>(data);
    let _ = parse::<t::AddSlotRequest>(data);
    let _ = parse::<t::ResealRequest>(data);
    let _ = parse::<t::CreateContainerRequest>(data);
    let _ = parse::<t::CreateSnapshotRequest>(data);
    if let Some(p) = parse::<t::PolicyDto>(data) {
        if let Ok(policy) = dw_daemon::policy_dto::from_dto(&p) {
            // What parses prints back to something that parses to the same policy.
            let again = dw_daemon::policy_dto::from_dto(&dw_daemon::policy_dto::to_dto(&policy))
                .expect("a printed policy parses");
            assert_eq!(again, policy);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = dw_daemon::devices::parse_size(s);
        let _ = dw_daemon::Config::parse(s, std::path::Path::new("fuzz.toml"));
        let _ = dw_api::fill_path("/api/v1/containers/{name}/snapshots/{snapshot}", &[s, s]);
    }
});
