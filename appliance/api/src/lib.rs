//! The DataWarehouse management API, version 1: what `dwd` serves and every front end calls.
//!
//! - [`types`]: the JSON bodies.
//! - [`ENDPOINTS`]: every route, with its method, request and response types. The daemon's
//!   router is checked against this table in its tests (no route missing, none extra), and
//!   [`openapi`] builds the OpenAPI document from it (checked in as `docs/openapi.json`).
//! - [`client`]: a client over the local Unix socket or HTTPS, used by the `dw` CLI.
//!
//! Authentication: the Unix socket is owner-only (mode 0600) and a connection on it acts as the
//! administrator. Over HTTPS every endpoint but `POST /api/v1/auth/login` needs
//! `Authorization: Bearer <token>` (a login session token or an API token).

#![deny(missing_docs)]

pub mod client;
pub mod types;

use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ArrayBuilder, ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi,
    OpenApiBuilder, PathsBuilder, Ref, RefOr, ResponseBuilder, ResponsesBuilder, Schema,
};

pub use client::{Client, ClientError, Target};

/// Version of this crate and of `dwd`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Path prefix of this API version.
pub const PREFIX: &str = "/api/v1";

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Method {
    /// Upper-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Get => "GET",
            Post => "POST",
            Put => "PUT",
            Delete => "DELETE",
        }
    }
}

/// What an endpoint answers with on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// A JSON object of this schema.
    Json(&'static str),
    /// A JSON array of this schema.
    List(&'static str),
    /// Any JSON object (documented elsewhere).
    AnyJson,
    /// `204 No Content`.
    Empty,
    /// `text/plain` (Prometheus exposition format).
    Text,
    /// `text/event-stream` of [`types::Event`].
    Events,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Method.
    pub method: Method,
    /// Path with `{param}` placeholders.
    pub path: &'static str,
    /// Unique operation id (also the CLI's internal name).
    pub operation: &'static str,
    /// One line for the documentation.
    pub summary: &'static str,
    /// Request body schema.
    pub request: Option<&'static str>,
    /// Success response.
    pub response: Body,
    /// Needs a token over HTTPS (all but login).
    pub auth: bool,
}

const fn ep(
    method: Method,
    path: &'static str,
    operation: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    response: Body,
) -> Endpoint {
    Endpoint {
        method,
        path,
        operation,
        summary,
        request,
        response,
        auth: true,
    }
}

use Body::{AnyJson, Empty, Events, Json, List, Text};
use Method::{Delete, Get, Post, Put};

/// Every endpoint of API v1.
#[rustfmt::skip]
pub const ENDPOINTS: &[Endpoint] = &[
    // system
    ep(Get, "/api/v1/health", "health", "Overall health: arrays, VDEs, problems", None, Json("Health")),
    ep(Get, "/api/v1/info", "info", "Where the appliance serves what (API, S3, NBD, metrics)", None, Json("Info")),
    ep(Get, "/api/v1/devices", "devices", "Hardware inventory from discovery (docs/dw-probe.schema.json)", None, AnyJson),
    ep(Get, "/api/v1/events", "events", "Server-sent events: job progress, alerts, state changes", None, Events),
    ep(Get, "/api/v1/openapi.json", "openapi", "This document", None, AnyJson),
    ep(Get, "/api/v1/metrics", "metrics", "Prometheus metrics", None, Text),
    // auth
    Endpoint {
        method: Post,
        path: "/api/v1/auth/login",
        operation: "login",
        summary: "Exchange a user name and password for a session token (rate-limited)",
        request: Some("LoginRequest"),
        response: Json("LoginResponse"),
        auth: false,
    },
    ep(Post, "/api/v1/auth/logout", "logout", "End the session of the token used", None, Empty),
    ep(Get, "/api/v1/users", "list_users", "Admin accounts", None, List("UserInfo")),
    ep(Post, "/api/v1/users", "create_user", "Create an admin account", Some("CreateUserRequest"), Json("UserInfo")),
    ep(Delete, "/api/v1/users/{name}", "delete_user", "Delete an admin account (not the last)", None, Empty),
    ep(Put, "/api/v1/users/{name}/password", "set_password", "Change a password (ends its sessions)", Some("SetPasswordRequest"), Empty),
    ep(Get, "/api/v1/tokens", "list_tokens", "API tokens", None, List("TokenInfo")),
    ep(Post, "/api/v1/tokens", "create_token", "Create an API token (shown once)", Some("CreateTokenRequest"), Json("CreateTokenResponse")),
    ep(Delete, "/api/v1/tokens/{id}", "delete_token", "Revoke an API token", None, Empty),
    // S3 keys
    ep(Get, "/api/v1/s3/keys", "list_s3_keys", "S3 access keys and their grants", None, List("S3KeyInfo")),
    ep(Post, "/api/v1/s3/keys", "create_s3_key", "Create an S3 access key (secret shown once)", Some("CreateS3KeyRequest"), Json("CreateS3KeyResponse")),
    ep(Delete, "/api/v1/s3/keys/{access_key}", "delete_s3_key", "Delete an S3 access key", None, Empty),
    ep(Put, "/api/v1/s3/keys/{access_key}/grants/{bucket}", "grant_s3_key", "Give a key read, write or manage access to a bucket (or none)", Some("GrantRequest"), Json("S3KeyInfo")),
    // arrays
    ep(Post, "/api/v1/arrays/plan", "plan_array", "Propose ways to combine drives", Some("PlanRequest"), Json("PlanResponse")),
    ep(Get, "/api/v1/arrays", "list_arrays", "Arrays", None, List("ArrayInfo")),
    ep(Post, "/api/v1/arrays", "create_array", "Create an array (destroys what is on the devices)", Some("CreateArrayRequest"), Json("ArrayInfo")),
    ep(Get, "/api/v1/arrays/{id}", "get_array", "One array, with rebuild progress", None, Json("ArrayInfo")),
    ep(Post, "/api/v1/arrays/{id}/spares", "add_spare", "Add a hot spare", Some("AddSpareRequest"), Json("ArrayInfo")),
    ep(Post, "/api/v1/arrays/{id}/replace", "replace_member", "Replace a member (by a named device or a spare)", Some("ReplaceRequest"), Json("ArrayInfo")),
    ep(Post, "/api/v1/arrays/{id}/fail", "fail_member", "Take a member out as failed", Some("FailMemberRequest"), Json("ArrayInfo")),
    ep(Post, "/api/v1/arrays/{id}/scrub", "scrub_array", "Start a scrub (verify and repair)", Some("ScrubRequest"), Json("JobRef")),
    ep(Put, "/api/v1/arrays/{id}/throttle", "throttle_array", "Limit rebuild bandwidth", Some("ThrottleRequest"), Json("ArrayInfo")),
    // VDEs
    ep(Get, "/api/v1/vdes", "list_vdes", "VDEs", None, List("VdeInfo")),
    ep(Post, "/api/v1/vdes", "create_vde", "Create a VDE with a recovery passphrase (and a TPM2 slot)", Some("CreateVdeRequest"), Json("CreateVdeResponse")),
    ep(Get, "/api/v1/vdes/{id}", "get_vde", "One VDE with capacity", None, Json("VdeInfo")),
    ep(Post, "/api/v1/vdes/{id}/unlock", "unlock_vde", "Unlock with the automatic slots or a recovery passphrase", Some("UnlockRequest"), Json("UnlockResponse")),
    ep(Post, "/api/v1/vdes/{id}/lock", "lock_vde", "Flush, close and forget the key", None, Json("VdeInfo")),
    ep(Get, "/api/v1/vdes/{id}/slots", "list_slots", "Key slots", None, List("SlotInfo")),
    ep(Post, "/api/v1/vdes/{id}/slots", "add_slot", "Add a key slot", Some("AddSlotRequest"), Json("AddSlotResponse")),
    ep(Delete, "/api/v1/vdes/{id}/slots/{slot}", "remove_slot", "Remove a key slot (never the last)", None, Empty),
    ep(Post, "/api/v1/vdes/{id}/reseal", "reseal_vde", "The new measured state is trusted: re-seal every slot to it", Some("ResealRequest"), Json("ResealResponse")),
    ep(Post, "/api/v1/vdes/{id}/rotate-key", "rotate_key", "Rotate the master key and re-encrypt (a job)", None, Json("JobRef")),
    ep(Get, "/api/v1/vdes/{id}/audit", "key_audit", "The key audit log", None, List("AuditEntryInfo")),
    ep(Get, "/api/v1/vdes/{id}/policy", "get_vde_policy", "The VDE-level policy", None, Json("PolicyDto")),
    ep(Put, "/api/v1/vdes/{id}/policy", "set_vde_policy", "Set the VDE-level policy", Some("PolicyDto"), Json("PolicyDto")),
    // containers
    ep(Get, "/api/v1/containers", "list_containers", "Buckets and volumes of every unlocked VDE", None, List("ContainerInfo")),
    ep(Post, "/api/v1/containers", "create_container", "Create a bucket or volume", Some("CreateContainerRequest"), Json("ContainerInfo")),
    ep(Get, "/api/v1/containers/{name}", "get_container", "One container", None, Json("ContainerInfo")),
    ep(Delete, "/api/v1/containers/{name}", "delete_container", "Delete an empty container", None, Empty),
    ep(Get, "/api/v1/containers/{name}/policy", "get_policy", "Effective policy and where each value comes from", None, Json("EffectivePolicy")),
    ep(Put, "/api/v1/containers/{name}/policy", "set_policy", "Set the container's policy", Some("PolicyDto"), Json("EffectivePolicy")),
    ep(Get, "/api/v1/containers/{name}/snapshots", "list_snapshots", "Snapshots", None, List("SnapshotInfo")),
    ep(Post, "/api/v1/containers/{name}/snapshots", "create_snapshot", "Take a snapshot", Some("CreateSnapshotRequest"), Json("SnapshotInfo")),
    ep(Delete, "/api/v1/containers/{name}/snapshots/{snapshot}", "delete_snapshot", "Delete a snapshot", None, Empty),
    ep(Post, "/api/v1/containers/{name}/snapshots/{snapshot}/rollback", "rollback", "Roll the container back to its newest snapshot", None, Json("ContainerInfo")),
    // jobs
    ep(Get, "/api/v1/jobs", "list_jobs", "Jobs of this daemon run", None, List("JobInfo")),
    ep(Get, "/api/v1/jobs/{id}", "get_job", "One job", None, Json("JobInfo")),
    ep(Post, "/api/v1/jobs/{id}/cancel", "cancel_job", "Ask a job to stop", None, Json("JobInfo")),
];

/// The endpoint with this operation id.
///
/// # Panics
/// If there is none: operation ids are compile-time constants of this crate, so a miss is a
/// programming error caught by the tests.
#[must_use]
pub fn endpoint(operation: &str) -> &'static Endpoint {
    ENDPOINTS
        .iter()
        .find(|e| e.operation == operation)
        .unwrap_or_else(|| panic!("no endpoint with operation id {operation:?}"))
}

/// Fills `{param}` placeholders of `path` in order, percent-encoding each value.
#[must_use]
pub fn fill_path(path: &str, params: &[&str]) -> String {
    let mut out = String::with_capacity(path.len() + 16);
    let mut it = params.iter();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&encode_segment(it.next().copied().unwrap_or("")));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Percent-encodes one path segment (everything but unreserved characters).
#[must_use]
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `123`, `64K`, `512M`, `1G`, `1.5T`, `2GiB` (binary units).
///
/// # Errors
/// A message naming the input when it is not a size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        "p" | "pib" | "pb" => 1 << 50,
        _ => return Err(format!("{s:?} has an unknown unit (use K, M, G, T or P)")),
    };
    let bad = || format!("{s:?} is not a size (like 512M, 1G or 1073741824)");
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let too_large = || format!("{s:?} is too large");
    let mut n = int.checked_mul(mult).ok_or_else(too_large)?;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
        let part = u64::try_from(digits * u128::from(mult) / scale).map_err(|_| too_large())?;
        n = n.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(n)
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn json_content(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

/// The OpenAPI 3.1 document of API v1, built from [`ENDPOINTS`] and the types' schemas.
#[must_use]
pub fn openapi() -> OpenApi {
    use types::{
        AddSlotRequest, AddSlotResponse, AddSpareRequest, ArrayInfo, ArraySummary, AuditEntryInfo,
        BucketGrant, Capacity, ContainerInfo, CreateArrayRequest, CreateContainerRequest,
        CreateS3KeyRequest, CreateS3KeyResponse, CreateSnapshotRequest, CreateTokenRequest,
        CreateTokenResponse, CreateUserRequest, CreateVdeRequest, CreateVdeResponse,
        EffectivePolicy, EffectiveSetting, ErrorBody, Event, FailMemberRequest, GrantRequest,
        Health, Info, JobInfo, JobRef, LoginRequest, LoginResponse, MemberInfo, PeerSlotRequest,
        PlanRequest, PlanResponse, PolicyDto, Proposal, RebuildProgress, ReplaceRequest,
        ResealRequest, ResealResponse, S3KeyInfo, ScrubRequest, SetPasswordRequest, SettingDto,
        SlotInfo, SnapshotInfo, ThrottleRequest, TokenInfo, TpmSlotRequest, UnlockRequest,
        UnlockResponse, UserInfo, VdeBacking, VdeInfo, VdeSummary,
    };
    let components = ComponentsBuilder::new()
        .schema_from::<AddSlotRequest>()
        .schema_from::<AddSlotResponse>()
        .schema_from::<AddSpareRequest>()
        .schema_from::<ArrayInfo>()
        .schema_from::<ArraySummary>()
        .schema_from::<AuditEntryInfo>()
        .schema_from::<BucketGrant>()
        .schema_from::<Capacity>()
        .schema_from::<ContainerInfo>()
        .schema_from::<CreateArrayRequest>()
        .schema_from::<CreateContainerRequest>()
        .schema_from::<CreateS3KeyRequest>()
        .schema_from::<CreateS3KeyResponse>()
        .schema_from::<CreateSnapshotRequest>()
        .schema_from::<CreateTokenRequest>()
        .schema_from::<CreateTokenResponse>()
        .schema_from::<CreateUserRequest>()
        .schema_from::<CreateVdeRequest>()
        .schema_from::<CreateVdeResponse>()
        .schema_from::<EffectivePolicy>()
        .schema_from::<EffectiveSetting>()
        .schema_from::<ErrorBody>()
        .schema_from::<Event>()
        .schema_from::<FailMemberRequest>()
        .schema_from::<GrantRequest>()
        .schema_from::<Health>()
        .schema_from::<Info>()
        .schema_from::<JobInfo>()
        .schema_from::<JobRef>()
        .schema_from::<LoginRequest>()
        .schema_from::<LoginResponse>()
        .schema_from::<MemberInfo>()
        .schema_from::<PeerSlotRequest>()
        .schema_from::<PlanRequest>()
        .schema_from::<PlanResponse>()
        .schema_from::<PolicyDto>()
        .schema_from::<Proposal>()
        .schema_from::<RebuildProgress>()
        .schema_from::<ReplaceRequest>()
        .schema_from::<ResealRequest>()
        .schema_from::<ResealResponse>()
        .schema_from::<S3KeyInfo>()
        .schema_from::<ScrubRequest>()
        .schema_from::<SetPasswordRequest>()
        .schema_from::<SettingDto>()
        .schema_from::<SlotInfo>()
        .schema_from::<SnapshotInfo>()
        .schema_from::<ThrottleRequest>()
        .schema_from::<TokenInfo>()
        .schema_from::<TpmSlotRequest>()
        .schema_from::<UnlockRequest>()
        .schema_from::<UnlockResponse>()
        .schema_from::<UserInfo>()
        .schema_from::<VdeBacking>()
        .schema_from::<VdeInfo>()
        .schema_from::<VdeSummary>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .build();

    let mut paths = PathsBuilder::new();
    for e in ENDPOINTS {
        let mut op = OperationBuilder::new()
            .operation_id(Some(e.operation))
            .summary(Some(e.summary));
        for seg in e.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                op = op.parameter(
                    utoipa::openapi::path::ParameterBuilder::new()
                        .name(name)
                        .parameter_in(utoipa::openapi::path::ParameterIn::Path)
                        .required(utoipa::openapi::Required::True)
                        .schema(Some(
                            ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String),
                        )),
                );
            }
        }
        if let Some(req) = e.request {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json_content(schema_ref(req)))
                    .required(Some(utoipa::openapi::Required::True))
                    .build(),
            ));
        }
        let ok = match e.response {
            Json(s) => ResponseBuilder::new()
                .description("OK")
                .content("application/json", json_content(schema_ref(s))),
            List(s) => ResponseBuilder::new().description("OK").content(
                "application/json",
                json_content(RefOr::T(Schema::Array(
                    ArrayBuilder::new().items(schema_ref(s)).build(),
                ))),
            ),
            AnyJson => ResponseBuilder::new().description("OK").content(
                "application/json",
                json_content(RefOr::T(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Object)
                        .build(),
                ))),
            ),
            Empty => ResponseBuilder::new().description("Done"),
            Text => ResponseBuilder::new()
                .description("Prometheus text format")
                .content(
                    "text/plain",
                    json_content(RefOr::T(Schema::Object(
                        ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::String)
                            .build(),
                    ))),
                ),
            Events => ResponseBuilder::new()
                .description("Server-sent events; each data line is an Event")
                .content("text/event-stream", json_content(schema_ref("Event"))),
        };
        let status = if e.response == Empty { "204" } else { "200" };
        let err = ResponseBuilder::new()
            .description("Error (see code)")
            .content("application/json", json_content(schema_ref("ErrorBody")))
            .build();
        let responses = ResponsesBuilder::new()
            .response(status, ok.build())
            .response("default", err)
            .build();
        op = op.responses(responses);
        if e.auth {
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        let method = match e.method {
            Get => HttpMethod::Get,
            Post => HttpMethod::Post,
            Put => HttpMethod::Put,
            Delete => HttpMethod::Delete,
        };
        paths = paths.path(e.path, PathItem::new(method, op.build()));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("DataWarehouse management API")
                .version(VERSION)
                .description(Some(
                    "Everything the console, the web panel, the CLI and the NixOS module do is \
                     a call to this API. See docs/API.md.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

/// [`openapi`] as pretty JSON with a trailing newline (the content of `docs/openapi.json`).
///
/// # Panics
/// Never in practice: the document is built from plain data and always serializes.
#[must_use]
pub fn openapi_json() -> String {
    let mut s = serde_json::to_string_pretty(&openapi()).expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn operations_and_routes_are_unique() {
        let mut ops = HashSet::new();
        let mut routes = HashSet::new();
        for e in ENDPOINTS {
            assert!(
                ops.insert(e.operation),
                "duplicate operation {}",
                e.operation
            );
            assert!(
                routes.insert((e.method, e.path)),
                "duplicate route {} {}",
                e.method.as_str(),
                e.path
            );
            assert!(e.path.starts_with(PREFIX), "{} outside {PREFIX}", e.path);
        }
    }

    #[test]
    fn every_referenced_schema_exists() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = openapi_json();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        // Every request/response named in the table is a real schema.
        for e in ENDPOINTS {
            for name in e.request.into_iter().chain(match e.response {
                Json(s) | List(s) => Some(s),
                _ => None,
            }) {
                assert!(
                    schemas.contains_key(name),
                    "{}: missing {name}",
                    e.operation
                );
            }
        }
    }

    #[test]
    fn checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        if on_disk != openapi_json() {
            if std::env::var_os("DW_UPDATE_GOLDEN").is_some() {
                std::fs::write(path, openapi_json()).unwrap();
            } else {
                panic!(
                    "docs/openapi.json is stale: run `DW_UPDATE_GOLDEN=1 cargo test -p dw-api` \
                     and commit the result"
                );
            }
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size(" 2 T").unwrap(), 2 << 40);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("x").is_err());
        assert!(parse_size("5Q").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size(".").is_err());
    }

    #[test]
    fn paths_fill_and_encode() {
        assert_eq!(
            fill_path(
                "/api/v1/containers/{name}/snapshots/{snapshot}",
                &["a b", "x/y"]
            ),
            "/api/v1/containers/a%20b/snapshots/x%2Fy"
        );
        assert_eq!(fill_path("/api/v1/health", &[]), "/api/v1/health");
    }
}
