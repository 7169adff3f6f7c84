//! Request and response bodies of the management API (JSON).
//!
//! These types are the contract between `dwd` and every front end (CLI, console, web panel,
//! NixOS module). Field names are `snake_case`; sizes are bytes, times are Unix seconds unless
//! the name says otherwise. Adding an optional field is a compatible change; removing or
//! renaming one needs `/api/v2` (see docs/API.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `locked`, `rate_limited`, `payload_too_large`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

// ------------------------------------------------------------------------------------ system

/// `GET /api/v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (everything redundant and unlocked), `degraded` (serving with a problem) or
    /// `failed` (something is offline or locked).
    pub status: String,
    /// Daemon version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// One line per problem, most severe first.
    pub problems: Vec<String>,
    /// Arrays by state.
    pub arrays: Vec<ArraySummary>,
    /// VDEs by state.
    pub vdes: Vec<VdeSummary>,
}

/// An array in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArraySummary {
    /// Array UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// `healthy`, `degraded`, `offline` or `missing` (not assembled).
    pub state: String,
}

/// A VDE in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VdeSummary {
    /// VDE UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// `unlocked`, `locked` or `unavailable`.
    pub state: String,
}

/// `GET /api/v1/info`: where the appliance serves what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Info {
    /// Daemon version.
    pub version: String,
    /// API version (`v1`).
    pub api_version: String,
    /// State directory.
    pub state_dir: String,
    /// Local Unix socket of this API.
    pub socket: String,
    /// HTTPS address of this API (`https://host:port`), if enabled.
    pub https_url: Option<String>,
    /// SHA-256 fingerprint of the HTTPS certificate (hex, colon separated).
    pub tls_fingerprint_sha256: Option<String>,
    /// S3 endpoint (`http://host:port`), if enabled.
    pub s3_url: Option<String>,
    /// S3 region reported to clients.
    pub s3_region: String,
    /// NBD address (`nbd://host:port`), if enabled.
    pub nbd_url: Option<String>,
    /// Prometheus metrics URL, if enabled.
    pub metrics_url: Option<String>,
}

// ------------------------------------------------------------------------------------ auth

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Account name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A session token for `Authorization: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// The token; shown once.
    pub token: String,
    /// Unix second it stops working.
    pub expires_at: u64,
}

/// An admin account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    /// Account name.
    pub name: String,
    /// Created, Unix seconds.
    pub created: u64,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Account name: 1-64 characters of `a-z A-Z 0-9 . _ -`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Password: at least 12 characters.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
}

/// `PUT /api/v1/users/{name}/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    /// New password: at least 12 characters.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
}

/// An API token (the secret itself is shown only when it is created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Token id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Account it acts as.
    pub user: String,
    /// Created, Unix seconds.
    pub created: u64,
    /// Unix second it stops working, if it expires.
    pub expires_at: Option<u64>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Label: 1-128 printable characters.
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f]{1,128}$")]
    pub name: String,
    /// Days until it expires (none: never).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A new API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateTokenResponse {
    /// Its metadata.
    pub info: TokenInfo,
    /// The secret for `Authorization: Bearer`; shown once.
    pub token: String,
}

// ------------------------------------------------------------------------------------ S3 keys

/// An S3 access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct S3KeyInfo {
    /// Access key id.
    pub access_key: String,
    /// Label.
    pub name: String,
    /// Created, Unix seconds.
    pub created: u64,
    /// Full access to every bucket.
    pub admin: bool,
    /// May create buckets (and so own them).
    pub can_create_buckets: bool,
    /// Permissions on buckets it does not own.
    pub grants: Vec<BucketGrant>,
}

/// A permission of one key on one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BucketGrant {
    /// Bucket name.
    pub bucket: String,
    /// `read`, `write` (includes read) or `manage` (includes write).
    pub access: String,
}

/// `POST /api/v1/s3/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateS3KeyRequest {
    /// Label: 1-128 printable characters.
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f]{1,128}$")]
    pub name: String,
    /// Full access to every bucket.
    #[serde(default)]
    pub admin: bool,
    /// May create buckets (default true).
    #[serde(default = "yes")]
    pub can_create_buckets: bool,
}

fn yes() -> bool {
    true
}

/// A new S3 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateS3KeyResponse {
    /// Its metadata.
    pub info: S3KeyInfo,
    /// Secret access key; shown once.
    pub secret_key: String,
}

/// `PUT /api/v1/s3/keys/{access_key}/grants/{bucket}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// `read`, `write`, `manage`, or `none` to revoke.
    #[schema(pattern = "^(read|write|manage|none)$")]
    pub access: String,
}

// ------------------------------------------------------------------------------------ arrays

/// `POST /api/v1/arrays/plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// Device paths (block devices or files). Empty: every device discovery reports available.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// Ways to combine the drives, recommended first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanResponse {
    /// The proposals.
    pub proposals: Vec<Proposal>,
}

/// One way to combine drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Proposal {
    /// Level (`jbod`, `raid0`, `raid1`, `raid10`, `raid5`, `raid6`, `raidz1`, `raidz2`,
    /// `raidz3`).
    pub level: String,
    /// Member devices in role order.
    pub members: Vec<String>,
    /// Hot spares.
    pub spares: Vec<String>,
    /// Copies (RAID-1/10).
    pub copies: u32,
    /// Bytes the array offers.
    pub usable_bytes: u64,
    /// Sum of the drive sizes.
    pub raw_bytes: u64,
    /// Bytes unused because the members differ in size.
    pub wasted_bytes: u64,
    /// Drives that may fail without data loss (spares not counted).
    pub fault_tolerance: u32,
    /// The recommended option.
    pub recommended: bool,
    /// One line for a person.
    pub summary: String,
}

/// `POST /api/v1/arrays`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArrayRequest {
    /// Name (at most 64 bytes).
    pub name: String,
    /// Level (see [`Proposal::level`]).
    pub level: String,
    /// Member devices in role order.
    pub devices: Vec<String>,
    /// Hot spares.
    #[serde(default)]
    pub spares: Vec<String>,
    /// Chunk size in bytes (power of two, 4 KiB-16 MiB; default 64 KiB).
    #[serde(default)]
    pub chunk_bytes: Option<u32>,
    /// RAID-10 copies (default 2).
    #[serde(default)]
    pub copies: Option<u32>,
    /// Use devices even when discovery says they hold data. Everything on them is lost.
    #[serde(default)]
    pub force: bool,
}

/// An array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArrayInfo {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Level.
    pub level: String,
    /// `healthy`, `degraded`, `offline` or `missing`.
    pub state: String,
    /// Why it is offline or missing.
    pub reason: Option<String>,
    /// Logical size in bytes.
    pub size_bytes: u64,
    /// Chunk size in bytes.
    pub chunk_bytes: u64,
    /// Members and spares.
    pub members: Vec<MemberInfo>,
    /// The current or last background job (rebuild, replace, resync).
    pub rebuild: Option<RebuildProgress>,
    /// Metadata generation.
    pub generation: u64,
    /// Reads served by reconstruction since assembly.
    pub reconstructed_reads: u64,
    /// Media errors repaired from redundancy since assembly.
    pub read_errors_repaired: u64,
    /// Devices offered at assembly but not taken, with reasons.
    pub rejected: Vec<String>,
}

/// A member or spare of an array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberInfo {
    /// Member UUID.
    pub uuid: String,
    /// Device path, when attached.
    pub device: Option<String>,
    /// Layout role (none for spares).
    pub role: Option<u32>,
    /// `in_sync`, `rebuilding`, `replacing`, `spare`, `failed` or `absent`.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// Rebuild progress of this member, bytes.
    pub done_bytes: Option<u64>,
    /// Bytes to rebuild.
    pub total_bytes: Option<u64>,
}

/// Progress of a rebuild, replacement or resynchronisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RebuildProgress {
    /// `rebuild`, `replace` or `resync`.
    pub kind: String,
    /// Role concerned (rebuild, replace).
    pub role: Option<u32>,
    /// Member bytes done.
    pub done_bytes: u64,
    /// Member bytes in total.
    pub total_bytes: u64,
    /// Bytes per second.
    pub rate_bytes_per_sec: f64,
    /// Seconds left, once a rate is known.
    pub eta_secs: Option<u64>,
    /// Finished.
    pub finished: bool,
    /// Why it stopped early.
    pub error: Option<String>,
}

/// `POST /api/v1/arrays/{id}/spares`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSpareRequest {
    /// Device path.
    pub device: String,
    /// Use it even when discovery says it holds data.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/arrays/{id}/replace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    /// Role to replace.
    pub role: u32,
    /// New device; none: take a hot spare.
    #[serde(default)]
    pub device: Option<String>,
    /// Use the device even when discovery says it holds data.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/arrays/{id}/fail`: take a member out (as if it had failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailMemberRequest {
    /// Role whose member to fail.
    pub role: u32,
}

/// `POST /api/v1/arrays/{id}/scrub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScrubRequest {
    /// Repair what can be proven wrong (default true).
    #[serde(default = "yes")]
    pub repair: bool,
}

/// `PUT /api/v1/arrays/{id}/throttle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRequest {
    /// Rebuild bandwidth limit in bytes per second (0: unlimited).
    pub bytes_per_sec: u64,
}

// ------------------------------------------------------------------------------------ jobs

/// A long-running operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    /// Job id.
    pub id: String,
    /// `scrub`, `rekey`, `create_array`, ...
    pub kind: String,
    /// What it works on (array or VDE id, container name).
    pub target: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Units done.
    pub done: u64,
    /// Units in total (0 when unknown).
    pub total: u64,
    /// Unit of `done`/`total` (`bytes`, `extents`).
    pub unit: String,
    /// Started, Unix seconds.
    pub started: u64,
    /// Finished, Unix seconds.
    pub finished: Option<u64>,
    /// Result or error, for a person.
    pub message: Option<String>,
    /// Structured result (e.g. a scrub report).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
}

/// A reference to a job just started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobRef {
    /// Job id: follow it at `/api/v1/jobs/{id}` or on the event stream.
    pub job_id: String,
}

/// One server-sent event on `/api/v1/events` (the `data:` line is this JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Sequence number (monotonic per daemon run).
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// `job`, `array`, `vde`, `drive`, `alert`.
    pub kind: String,
    /// `info`, `warning` or `error`.
    pub level: String,
    /// For a person.
    pub message: String,
    /// Details (a job's [`JobInfo`], an array id, ...); null when there are none.
    #[schema(value_type = Option<Object>)]
    pub data: serde_json::Value,
}

// ------------------------------------------------------------------------------------ VDEs

/// Where a new VDE lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VdeBacking {
    /// On an array (by UUID or name).
    Array(String),
    /// In a file (created if missing, at least `size_bytes`).
    File {
        /// Path.
        path: String,
        /// Size in bytes.
        size_bytes: u64,
    },
}

/// TPM2 slot options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TpmSlotRequest {
    /// PCRs to bind (default: 7, secure boot state; see docs/KEYS.md).
    #[serde(default)]
    pub pcrs: Vec<u8>,
    /// Also require this PIN.
    #[serde(default)]
    pub pin: Option<String>,
}

/// `POST /api/v1/vdes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVdeRequest {
    /// Name (1-64 characters of `a-z A-Z 0-9 . _ -`).
    pub name: String,
    /// Where it lives.
    pub backing: VdeBacking,
    /// Profile for the VDE-level policy (`speed`, `balanced`, `standard`, `strict`,
    /// `paranoid`; default `standard`).
    #[serde(default)]
    pub profile: Option<String>,
    /// Administrator contact, readable without keys in the recovery block.
    #[serde(default)]
    pub admin_contact: String,
    /// Your own recovery passphrase (strength-checked); none: one is generated and returned once.
    #[serde(default)]
    pub passphrase: Option<String>,
    /// Add a TPM2 slot.
    #[serde(default)]
    pub tpm: Option<TpmSlotRequest>,
}

/// A new VDE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateVdeResponse {
    /// The VDE.
    pub vde: VdeInfo,
    /// The generated recovery passphrase: shown once, store it safely.
    pub recovery_passphrase: Option<String>,
}

/// A VDE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VdeInfo {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// `unlocked`, `locked` or `unavailable` (its backing is missing or offline).
    pub state: String,
    /// Why it is locked or unavailable (the last unlock attempt).
    pub reason: Option<String>,
    /// `array:<uuid>` or `file:<path>`.
    pub backing: String,
    /// Administrator contact from the recovery block.
    pub admin_contact: Option<String>,
    /// The slot that opened it.
    pub unlocked_by: Option<String>,
    /// A slot failed because the measured state changed, or a temporary slot was used: confirm
    /// the state is trusted with `reseal`.
    pub reseal_recommended: bool,
    /// Capacity (when unlocked).
    pub capacity: Option<Capacity>,
    /// VDE-level policy profile.
    pub profile: Option<String>,
}

/// Capacity of a VDE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    /// Bytes of the backing device.
    pub device_bytes: u64,
    /// Bytes of the data region.
    pub data_bytes: u64,
    /// Free bytes of the data region.
    pub free_bytes: u64,
    /// Logical bytes of live data.
    pub logical_bytes: u64,
    /// Stored bytes of live data (after compression and encryption).
    pub stored_bytes: u64,
    /// Stored bytes kept only for snapshots and old versions.
    pub retained_bytes: u64,
    /// Bytes of the metadata region, and used.
    pub metadata_bytes: u64,
    /// Metadata bytes used.
    pub metadata_used: u64,
    /// Checksum failures healed from redundancy.
    pub healed: u64,
}

/// `POST /api/v1/vdes/{id}/unlock`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    /// Recovery passphrase; none: try the automatic slots (TPM2, SEV-SNP, peer) again.
    #[serde(default)]
    pub passphrase: Option<String>,
    /// PIN for TPM2 slots that need one.
    #[serde(default)]
    pub pin: Option<String>,
}

/// Result of an unlock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnlockResponse {
    /// The VDE.
    pub vde: VdeInfo,
    /// Slots tried before the one that worked, and why they failed.
    pub attempts: Vec<String>,
}

/// A key slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlotInfo {
    /// Slot number.
    pub id: u32,
    /// `tpm2`, `passphrase`, `sev_snp` or `peer`.
    pub kind: String,
    /// Label.
    pub label: String,
    /// Created, Unix seconds.
    pub created: u64,
    /// Last used to unlock, Unix seconds.
    pub last_used: Option<u64>,
    /// Kind-specific details for a person (PCRs bound, KDF parameters, peer endpoint).
    pub details: String,
}

/// Peer-release slot options: the key-release service (`dw-keyd`) to enroll with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerSlotRequest {
    /// `host:port` of the service.
    pub endpoint: String,
    /// SHA-256 of its certificate, 64 hex digits (colons allowed): `dw-keyd fingerprint`.
    pub cert_sha256: String,
    /// Its enrollment token, 64 hex digits (printed once by `dw-keyd init`).
    pub token: String,
    /// PCRs the service will require in every quote (default: 7, as TPM2 slots).
    #[serde(default)]
    pub pcrs: Vec<u8>,
}

/// `POST /api/v1/vdes/{id}/slots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSlotRequest {
    /// `passphrase`, `tpm2`, `peer` or `sev_snp` (SEV-SNP guests only; elsewhere the answer
    /// says why it is not available).
    #[schema(pattern = "^(passphrase|tpm2|peer|sev_snp)$")]
    pub kind: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Passphrase slots: your own passphrase; none: generate one (returned once).
    #[serde(default)]
    pub passphrase: Option<String>,
    /// TPM2 slots: options.
    #[serde(default)]
    pub tpm: Option<TpmSlotRequest>,
    /// Peer slots: the service to enroll with (required for `peer`).
    #[serde(default)]
    pub peer: Option<PeerSlotRequest>,
}

/// A new slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddSlotResponse {
    /// The slot.
    pub slot: SlotInfo,
    /// The generated passphrase: shown once.
    pub passphrase: Option<String>,
}

/// `POST /api/v1/vdes/{id}/reseal`: the machine's new measured state is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResealRequest {
    /// PIN of TPM2 slots that have one.
    #[serde(default)]
    pub pin: Option<String>,
}

/// What a reseal did, one line per slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResealResponse {
    /// Per slot.
    pub slots: Vec<String>,
}

/// An entry of the key audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryInfo {
    /// Sequence number.
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// What happened.
    pub action: String,
}

// ------------------------------------------------------------------------------------ policy

/// A policy as set at one level; absent fields are not set there.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDto {
    /// Profile supplying every setting not set explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `none` or `zstd:<level>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<SettingDto>,
    /// `none` or `aes-256-gcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<SettingDto>,
    /// `true` / `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_checksums: Option<SettingDto>,
    /// `true` / `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<SettingDto>,
    /// `<days>d:governance` or `<days>d:compliance` (`0d` = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<SettingDto>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<SettingDto>,
}

/// One setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingDto {
    /// The value, as text (see [`PolicyDto`]).
    pub value: String,
    /// Levels below cannot loosen it.
    #[serde(default)]
    pub enforce: bool,
}

/// The policy in force, with the origin of every value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EffectivePolicy {
    /// One entry per setting.
    pub settings: Vec<EffectiveSetting>,
}

/// One resolved setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EffectiveSetting {
    /// Setting name.
    pub name: String,
    /// Value in force.
    pub value: String,
    /// Where it came from (`default`, `vde`, `vde profile standard`, `container (enforced)`, ...).
    pub source: String,
}

// ------------------------------------------------------------------------------------ containers

/// `POST /api/v1/containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainerRequest {
    /// Name: for buckets an S3 bucket name (3-63 of `a-z 0-9 . -`), for volumes 1-64 of
    /// `a-z A-Z 0-9 . _ -`. Unique across the appliance.
    pub name: String,
    /// `bucket` or `volume`.
    #[schema(pattern = "^(bucket|volume)$")]
    pub kind: String,
    /// VDE (UUID or name); default: the daemon's `s3.default_vde`, else the first unlocked VDE.
    #[serde(default)]
    pub vde: Option<String>,
    /// Volumes: size in bytes (a multiple of the block size).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Policy (profile and settings).
    #[serde(default)]
    pub policy: Option<PolicyDto>,
    /// Record size in bytes (power of two, 4 KiB-1 MiB; default 128 KiB for buckets, 16 KiB for
    /// volumes).
    #[serde(default)]
    pub record_size: Option<u32>,
    /// Buckets: S3 key that owns it (default: none, only admin keys and grants).
    #[serde(default)]
    pub owner: Option<String>,
}

/// A container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerInfo {
    /// Name.
    pub name: String,
    /// `bucket` or `volume`.
    pub kind: String,
    /// VDE UUID.
    pub vde: String,
    /// Volumes: size in bytes.
    pub size_bytes: Option<u64>,
    /// Created, Unix seconds.
    pub created: u64,
    /// Record size in bytes.
    pub record_size: u32,
    /// Live objects (buckets).
    pub objects: u64,
    /// Logical bytes of live data.
    pub logical_bytes: u64,
    /// Stored bytes of live data.
    pub stored_bytes: u64,
    /// Stored bytes kept only for snapshots or old versions.
    pub retained_bytes: u64,
    /// Its own policy settings.
    pub policy: PolicyDto,
    /// Buckets: owning S3 key.
    pub owner: Option<String>,
    /// Volumes: NBD export name.
    pub nbd_export: Option<String>,
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    /// Name.
    pub name: String,
    /// Created, Unix seconds.
    pub created: u64,
    /// Stored bytes only this snapshot holds (freed by deleting it).
    pub unique_bytes: u64,
}

/// `POST /api/v1/containers/{name}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// Name (1-64 characters of `a-z A-Z 0-9 . _ -`).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
}
