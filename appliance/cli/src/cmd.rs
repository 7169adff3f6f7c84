//! The commands: each is one or a few API calls (operation ids of `dw_api::ENDPOINTS`), then
//! a table, or with `--json` the API's JSON as it came.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use dw_api::client::{Trust, parse_fingerprint};
use dw_api::types::{
    AddSlotRequest, AddSlotResponse, AddSpareRequest, ArrayInfo, AuditEntryInfo, ContainerInfo,
    CreateArrayRequest, CreateContainerRequest, CreateS3KeyRequest, CreateS3KeyResponse,
    CreateSnapshotRequest, CreateTokenRequest, CreateTokenResponse, CreateUserRequest,
    CreateVdeRequest, CreateVdeResponse, EffectivePolicy, Event, FailMemberRequest, GrantRequest,
    Health, Info, JobInfo, JobRef, LoginRequest, LoginResponse, PeerSlotRequest, PlanRequest,
    PlanResponse, PolicyDto, ReplaceRequest, ResealRequest, ResealResponse, S3KeyInfo,
    ScrubRequest, SetPasswordRequest, SlotInfo, SnapshotInfo, ThrottleRequest, TokenInfo,
    TpmSlotRequest, UnlockRequest, UnlockResponse, UserInfo, VdeBacking, VdeInfo,
};
use dw_api::{Client, ClientError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::input::{Secrets, apply_policy};
use crate::render::{
    Table, duration, json, kv, opt, opt_size, opt_time, out, percent, rate, section, size, time,
    yes_no,
};
use crate::{
    ArrayCmd, Cli, Cmd, ConnArgs, ContainerCmd, DEFAULT_SOCKET, Fail, JobCmd, PolicyEdit, S3KeyCmd,
    SlotKind, SnapshotCmd, TokenCmd, UserCmd, VdeCmd,
};

/// No request body.
const NONE: Option<&()> = None;
/// How often `--wait` polls a job.
const POLL: Duration = Duration::from_millis(500);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The client for the connection settings: `--url` (or `$DW_URL` unless `--socket` is given)
/// selects HTTPS, else the Unix socket.
fn client(c: &ConnArgs) -> Result<Client, Fail> {
    let url = c
        .url
        .clone()
        .or_else(|| c.socket.is_none().then(|| env("DW_URL")).flatten());
    let Some(url) = url else {
        let path = c
            .socket
            .clone()
            .or_else(|| env("DW_SOCKET").map(Into::into))
            .unwrap_or_else(|| DEFAULT_SOCKET.into());
        return Ok(Client::unix(path));
    };
    let token = c.token.clone().or_else(|| env("DW_TOKEN"));
    // An explicit flag beats the environment; --ca and --fingerprint exclude each other.
    let (fingerprint, ca) = match (&c.fingerprint, &c.ca) {
        (Some(f), _) => (Some(f.clone()), None),
        (None, Some(ca)) => (None, Some(ca.clone())),
        (None, None) => match env("DW_CA") {
            Some(ca) => (None, Some(ca.into())),
            None => (env("DW_FINGERPRINT"), None),
        },
    };
    let trust = match (fingerprint, ca) {
        (Some(f), _) => Trust::Fingerprint(parse_fingerprint(&f)?),
        (None, Some(ca)) => {
            Trust::CaPem(std::fs::read(&ca).map_err(|e| {
                Fail::usage(format!("cannot read the CA file {}: {e}", ca.display()))
            })?)
        }
        (None, None) => {
            return Err(Fail::usage(
                "HTTPS needs the server's certificate fingerprint (--fingerprint or DW_FINGERPRINT, \
                 see `dwd` output or `dw info`) or a CA file (--ca or DW_CA)",
            ));
        }
    };
    Ok(Client::https(&url, trust, token)?)
}

/// A connected command context.
struct Ctx {
    client: Client,
    json: bool,
    https: bool,
    has_token: bool,
}

impl Ctx {
    fn fail(&self, e: ClientError) -> Fail {
        let mut f = Fail::from(e);
        if f.code == 3 && self.https && !self.has_token {
            f.message.push_str(
                ": no token given; log in with `export DW_TOKEN=$(dw login --user NAME ...)` or \
                 pass --token",
            );
        }
        f
    }

    /// Calls an operation and returns its JSON answer (`null` for `204 No Content`).
    async fn call<B: Serialize>(
        &self,
        op: &str,
        params: &[&str],
        body: Option<&B>,
    ) -> Result<Value, Fail> {
        self.client
            .call::<B, Value>(op, params, body)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Prints the answer: its JSON with `--json`, else `render` of its typed form.
    fn show<T: DeserializeOwned>(
        &self,
        v: &Value,
        render: impl FnOnce(T) -> String,
    ) -> Result<(), Fail> {
        if self.json {
            out(&json(v));
        } else {
            out(&render(typed(v)?));
        }
        Ok(())
    }

    /// For `204` answers: a confirmation line (nothing with `--json`: the API returned no body).
    fn done(&self, message: &str) {
        if !self.json {
            out(message);
        }
    }

    /// Device and file paths name files on the daemon's machine: relative ones are made
    /// absolute against this directory when that machine is this one (the socket).
    fn local_path(&self, p: String) -> String {
        if self.https || p.starts_with('/') {
            return p;
        }
        std::path::absolute(&p).map_or(p, |a| a.display().to_string())
    }

    fn local_paths(&self, v: Vec<String>) -> Vec<String> {
        v.into_iter().map(|p| self.local_path(p)).collect()
    }

    /// Polls a job until it finishes, with progress on stderr; returns its final JSON.
    async fn wait_job(&self, id: &str) -> Result<Value, Fail> {
        let tty = std::io::stderr().is_terminal();
        let mut last_line: Option<Instant> = None;
        loop {
            let v = self.call("get_job", &[id], NONE).await?;
            let j: JobInfo = typed(&v)?;
            if j.state != "running" {
                if tty && last_line.is_some() {
                    eprint!("\r\x1b[K");
                }
                return Ok(v);
            }
            let line = format!(
                "job {} ({} {}): {} {}",
                j.id,
                j.kind,
                j.target,
                j.state,
                progress(&j)
            );
            if tty {
                eprint!("\r\x1b[K{line}");
                last_line = Some(Instant::now());
            } else if last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                eprintln!("{line}");
                last_line = Some(Instant::now());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a job, prints it, and fails unless it succeeded.
    async fn wait_and_report(&self, id: &str) -> Result<(), Fail> {
        let v = self.wait_job(id).await?;
        self.show(&v, |x: JobInfo| job_detail(&x))?;
        job_outcome(&typed(&v)?)
    }
}

fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, Fail> {
    T::deserialize(v).map_err(|e| {
        Fail::other(format!(
            "cannot understand dwd's answer ({e}); is dw the same version as dwd?"
        ))
    })
}

fn job_outcome(j: &JobInfo) -> Result<(), Fail> {
    if j.state == "succeeded" {
        return Ok(());
    }
    Err(Fail::other(format!(
        "job {} ({} {}) {}{}",
        j.id,
        j.kind,
        j.target,
        j.state,
        j.message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    )))
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<(), Fail> {
    let client = client(&cli.conn)?;
    let ctx = Ctx {
        https: matches!(client.target(), dw_api::Target::Https { .. }),
        has_token: matches!(
            client.target(),
            dw_api::Target::Https { token: Some(_), .. }
        ),
        client,
        json: cli.json,
    };
    match cli.cmd {
        Cmd::Health => {
            let v = ctx.call("health", &[], NONE).await?;
            ctx.show(&v, |x: Health| health(&x))
        }
        Cmd::Info => {
            let v = ctx.call("info", &[], NONE).await?;
            ctx.show(&v, info)
        }
        Cmd::Devices => {
            let v = ctx.call("devices", &[], NONE).await?;
            ctx.show(&v, |v: Value| devices(&v))
        }
        Cmd::Metrics => {
            let text = ctx
                .client
                .call_text("metrics")
                .await
                .map_err(|e| ctx.fail(e))?;
            out(&text);
            Ok(())
        }
        Cmd::Events { count } => events(&ctx, count).await,
        Cmd::Openapi => {
            let v = ctx.call("openapi", &[], NONE).await?;
            out(&json(&v));
            Ok(())
        }
        Cmd::Login {
            user,
            password_stdin: _,
        } => {
            let password = Secrets::new().read("password", false)?;
            let v = ctx
                .call(
                    "login",
                    &[],
                    Some(&LoginRequest {
                        username: user,
                        password,
                    }),
                )
                .await?;
            let r: LoginResponse = typed(&v)?;
            if ctx.json {
                out(&json(&v));
            } else {
                out(&r.token);
                eprintln!(
                    "dw: logged in; the token above is valid until {}",
                    time(r.expires_at)
                );
            }
            Ok(())
        }
        Cmd::Logout => {
            ctx.call("logout", &[], NONE).await?;
            ctx.done("Logged out: the session token no longer works.");
            Ok(())
        }
        Cmd::User(c) => user(&ctx, c).await,
        Cmd::Token(c) => token(&ctx, c).await,
        Cmd::S3Key(c) => s3_key(&ctx, c).await,
        Cmd::Array(c) => array(&ctx, c).await,
        Cmd::Vde(c) => vde(&ctx, c).await,
        Cmd::Container(c) => container(&ctx, c).await,
        Cmd::Snapshot(c) => snapshot(&ctx, c).await,
        Cmd::Job(c) => job(&ctx, c).await,
    }
}

// ------------------------------------------------------------------------------------ system

fn health(h: &Health) -> String {
    let mut s = kv(&[
        ("Status", h.status.clone()),
        ("Version", h.version.clone()),
        ("Uptime", duration(h.uptime_secs)),
    ]);
    if !h.problems.is_empty() {
        let mut p = String::new();
        for line in &h.problems {
            let _ = writeln!(p, "  - {line}");
        }
        s.push_str(&section("Problems", &p));
    }
    let mut t = Table::new(&["ARRAY", "STATE", "ID"]);
    for a in &h.arrays {
        t.row(vec![a.name.clone(), a.state.clone(), a.id.clone()]);
    }
    s.push('\n');
    s.push_str(&t.render("No arrays."));
    let mut t = Table::new(&["VDE", "STATE", "ID"]);
    for v in &h.vdes {
        t.row(vec![v.name.clone(), v.state.clone(), v.id.clone()]);
    }
    s.push('\n');
    s.push_str(&t.render("No VDEs."));
    s
}

fn info(i: Info) -> String {
    kv(&[
        ("Version", i.version),
        ("API", i.api_version),
        ("State directory", i.state_dir),
        ("Socket", i.socket),
        ("HTTPS", opt(i.https_url.as_deref())),
        ("TLS fingerprint", opt(i.tls_fingerprint_sha256.as_deref())),
        ("S3", opt(i.s3_url.as_deref())),
        ("S3 region", i.s3_region),
        ("NBD", opt(i.nbd_url.as_deref())),
        ("Metrics", opt(i.metrics_url.as_deref())),
    ])
}

/// The discovery inventory (docs/dw-probe.schema.json), read loosely: it is `AnyJson`.
fn devices(v: &Value) -> String {
    let text = |d: &Value, k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut t = Table::new(&[
        "DEVICE",
        "SIZE",
        "MODEL",
        "TRANSPORT",
        "VERDICT",
        "HEALTH",
        "WHY",
    ]);
    for d in v
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let why: Vec<String> = d
            .get("reasons")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| text(r, "code"))
            .collect();
        let transport = match d.get("transport") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        t.row(vec![
            text(d, "path"),
            opt_size(d.get("size_bytes").and_then(Value::as_u64)),
            text(d, "model"),
            transport,
            text(d, "verdict"),
            d.get("health")
                .map(|h| text(h, "verdict"))
                .unwrap_or_default(),
            why.join(", "),
        ]);
    }
    t.render("No block devices found.")
}

fn event_line(e: &Event) -> String {
    format!(
        "{}  {:<7}  {:<9}  {}",
        time(e.time),
        e.level,
        e.kind,
        e.message
    )
}

async fn events(ctx: &Ctx, count: Option<u64>) -> Result<(), Fail> {
    let mut seen = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    let json = ctx.json;
    ctx.client
        .events(|e| {
            if json {
                out(&serde_json::to_string(&e).unwrap_or_default());
            } else {
                out(&event_line(&e));
            }
            seen += 1;
            count.is_none_or(|c| seen < c)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
    // The stream only ends early when the daemon goes away.
    if count.is_none_or(|c| seen < c) {
        return Err(Fail::new(
            7,
            format!("the event stream ended after {seen} events (dwd stopped?)"),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------ auth

async fn user(ctx: &Ctx, c: UserCmd) -> Result<(), Fail> {
    match c {
        UserCmd::List => {
            let v = ctx.call("list_users", &[], NONE).await?;
            ctx.show(&v, |users: Vec<UserInfo>| {
                let mut t = Table::new(&["NAME", "CREATED"]);
                for u in users {
                    t.row(vec![u.name, time(u.created)]);
                }
                t.render("No accounts.")
            })
        }
        UserCmd::Add { name } => {
            let password = Secrets::new().read("password", true)?;
            let v = ctx
                .call(
                    "create_user",
                    &[],
                    Some(&CreateUserRequest { name, password }),
                )
                .await?;
            ctx.show(&v, |u: UserInfo| format!("Created account {}.", u.name))
        }
        UserCmd::Delete { name } => {
            ctx.call("delete_user", &[&name], NONE).await?;
            ctx.done(&format!("Deleted account {name}."));
            Ok(())
        }
        UserCmd::Passwd { name } => {
            let password = Secrets::new().read("new password", true)?;
            ctx.call(
                "set_password",
                &[&name],
                Some(&SetPasswordRequest { password }),
            )
            .await?;
            ctx.done(&format!(
                "Password of {name} changed; its sessions have ended."
            ));
            Ok(())
        }
    }
}

async fn token(ctx: &Ctx, c: TokenCmd) -> Result<(), Fail> {
    match c {
        TokenCmd::List => {
            let v = ctx.call("list_tokens", &[], NONE).await?;
            ctx.show(&v, |tokens: Vec<TokenInfo>| {
                let mut t = Table::new(&["ID", "NAME", "USER", "CREATED", "EXPIRES"]);
                for k in tokens {
                    t.row(vec![
                        k.id,
                        k.name,
                        k.user,
                        time(k.created),
                        k.expires_at.map_or_else(|| "never".into(), time),
                    ]);
                }
                t.render("No API tokens.")
            })
        }
        TokenCmd::Create { name, days } => {
            let v = ctx
                .call(
                    "create_token",
                    &[],
                    Some(&CreateTokenRequest {
                        name,
                        expires_in_days: days,
                    }),
                )
                .await?;
            ctx.show(&v, |r: CreateTokenResponse| {
                let mut s = kv(&[
                    ("ID", r.info.id),
                    ("Name", r.info.name),
                    ("User", r.info.user),
                    (
                        "Expires",
                        r.info.expires_at.map_or_else(|| "never".into(), time),
                    ),
                ]);
                s.push_str(&secret_block(
                    "API token (shown once: store it now; use it as DW_TOKEN)",
                    &r.token,
                ));
                s
            })
        }
        TokenCmd::Delete { id } => {
            ctx.call("delete_token", &[&id], NONE).await?;
            ctx.done(&format!("Revoked API token {id}."));
            Ok(())
        }
    }
}

fn secret_block(title: &str, secret: &str) -> String {
    format!("\n{title}:\n\n    {secret}\n")
}

// ------------------------------------------------------------------------------------ S3 keys

fn grants(k: &S3KeyInfo) -> String {
    if k.admin {
        return "all buckets (admin)".into();
    }
    k.grants
        .iter()
        .map(|g| format!("{}:{}", g.bucket, g.access))
        .collect::<Vec<_>>()
        .join(", ")
}

fn s3_key_detail(k: &S3KeyInfo) -> String {
    kv(&[
        ("Access key", k.access_key.clone()),
        ("Name", k.name.clone()),
        ("Created", time(k.created)),
        ("Admin", yes_no(k.admin)),
        ("Creates buckets", yes_no(k.can_create_buckets)),
        ("Grants", grants(k)),
    ])
}

async fn s3_key(ctx: &Ctx, c: S3KeyCmd) -> Result<(), Fail> {
    match c {
        S3KeyCmd::List => {
            let v = ctx.call("list_s3_keys", &[], NONE).await?;
            ctx.show(&v, |keys: Vec<S3KeyInfo>| {
                let mut t = Table::new(&[
                    "ACCESS KEY",
                    "NAME",
                    "ADMIN",
                    "CREATES BUCKETS",
                    "CREATED",
                    "GRANTS",
                ]);
                for k in keys {
                    let g = grants(&k);
                    t.row(vec![
                        k.access_key,
                        k.name,
                        yes_no(k.admin),
                        yes_no(k.can_create_buckets),
                        time(k.created),
                        g,
                    ]);
                }
                t.render("No S3 keys.")
            })
        }
        S3KeyCmd::Create {
            name,
            admin,
            no_create_buckets,
        } => {
            let v = ctx
                .call(
                    "create_s3_key",
                    &[],
                    Some(&CreateS3KeyRequest {
                        name,
                        admin,
                        can_create_buckets: !no_create_buckets,
                    }),
                )
                .await?;
            ctx.show(&v, |r: CreateS3KeyResponse| {
                let mut s = s3_key_detail(&r.info);
                s.push_str(&secret_block(
                    "Secret key (shown once: store it now)",
                    &r.secret_key,
                ));
                s
            })
        }
        S3KeyCmd::Delete { access_key } => {
            ctx.call("delete_s3_key", &[&access_key], NONE).await?;
            ctx.done(&format!("Deleted S3 key {access_key}."));
            Ok(())
        }
        S3KeyCmd::Grant {
            access_key,
            bucket,
            access,
        } => {
            let v = ctx
                .call(
                    "grant_s3_key",
                    &[&access_key, &bucket],
                    Some(&GrantRequest {
                        access: access.as_str().into(),
                    }),
                )
                .await?;
            ctx.show(&v, |x: S3KeyInfo| s3_key_detail(&x))
        }
    }
}

// ------------------------------------------------------------------------------------ arrays

fn array_detail(a: &ArrayInfo) -> String {
    let mut s = kv(&[
        ("Name", a.name.clone()),
        ("ID", a.id.clone()),
        ("Level", a.level.clone()),
        ("State", a.state.clone()),
        ("Reason", opt(a.reason.as_deref())),
        ("Size", size(a.size_bytes)),
        ("Chunk", size(a.chunk_bytes)),
        ("Generation", a.generation.to_string()),
        ("Reconstructed reads", a.reconstructed_reads.to_string()),
        ("Read errors repaired", a.read_errors_repaired.to_string()),
    ]);
    if let Some(r) = &a.rebuild {
        let state = if r.finished {
            r.error
                .as_ref()
                .map_or_else(|| "finished".to_owned(), |e| format!("stopped: {e}"))
        } else {
            format!(
                "{} at {}{}",
                percent(r.done_bytes, r.total_bytes),
                rate(r.rate_bytes_per_sec),
                r.eta_secs
                    .map(|e| format!(", {} left", duration(e)))
                    .unwrap_or_default()
            )
        };
        let role = r.role.map(|r| format!(" of role {r}")).unwrap_or_default();
        s.push_str(&kv(&[(
            "Rebuild",
            format!(
                "{}{role}: {} of {}, {state}",
                r.kind,
                size(r.done_bytes),
                size(r.total_bytes)
            ),
        )]));
    }
    let mut t = Table::new(&["ROLE", "DEVICE", "STATE", "PROGRESS", "UUID", "REASON"]);
    for m in &a.members {
        t.row(vec![
            m.role.map_or_else(|| "spare".into(), |r| r.to_string()),
            opt(m.device.as_deref()),
            m.state.clone(),
            match (m.done_bytes, m.total_bytes) {
                (Some(d), Some(t)) => percent(d, t),
                _ => String::new(),
            },
            m.uuid.clone(),
            opt(m.reason.as_deref()),
        ]);
    }
    s.push_str(&section("Members", &t.render("No members.")));
    if !a.rejected.is_empty() {
        let mut r = String::new();
        for line in &a.rejected {
            let _ = writeln!(r, "  - {line}");
        }
        s.push_str(&section("Devices not taken at assembly", &r));
    }
    s
}

async fn array(ctx: &Ctx, c: ArrayCmd) -> Result<(), Fail> {
    match c {
        ArrayCmd::Plan { devices } => {
            let v = ctx
                .call(
                    "plan_array",
                    &[],
                    Some(&PlanRequest {
                        devices: ctx.local_paths(devices),
                    }),
                )
                .await?;
            ctx.show(&v, |p: PlanResponse| {
                let mut t = Table::new(&[
                    "",
                    "LEVEL",
                    "USABLE",
                    "RAW",
                    "WASTED",
                    "TOLERATES",
                    "MEMBERS",
                    "SPARES",
                    "SUMMARY",
                ]);
                for p in p.proposals {
                    t.row(vec![
                        if p.recommended { "*" } else { "" }.into(),
                        p.level,
                        size(p.usable_bytes),
                        size(p.raw_bytes),
                        size(p.wasted_bytes),
                        p.fault_tolerance.to_string(),
                        p.members.join(","),
                        p.spares.join(","),
                        p.summary,
                    ]);
                }
                let mut s = t.render("No way to combine these drives.");
                if s.contains('*') {
                    s.push_str("(* recommended)\n");
                }
                s
            })
        }
        ArrayCmd::List => {
            let v = ctx.call("list_arrays", &[], NONE).await?;
            ctx.show(&v, |arrays: Vec<ArrayInfo>| {
                let mut t =
                    Table::new(&["NAME", "LEVEL", "STATE", "SIZE", "MEMBERS", "REBUILD", "ID"]);
                for a in arrays {
                    let members = a.members.iter().filter(|m| m.role.is_some()).count();
                    let spares = a.members.len() - members;
                    t.row(vec![
                        a.name,
                        a.level,
                        a.state,
                        size(a.size_bytes),
                        if spares > 0 {
                            format!("{members} + {spares} spare")
                        } else {
                            members.to_string()
                        },
                        a.rebuild
                            .filter(|r| !r.finished)
                            .map(|r| format!("{} {}", r.kind, percent(r.done_bytes, r.total_bytes)))
                            .unwrap_or_default(),
                        a.id,
                    ]);
                }
                t.render("No arrays.")
            })
        }
        ArrayCmd::Show { id } => {
            let v = ctx.call("get_array", &[&id], NONE).await?;
            ctx.show(&v, |x: ArrayInfo| array_detail(&x))
        }
        ArrayCmd::Create {
            name,
            level,
            devices,
            spares,
            chunk,
            copies,
            force,
        } => {
            let v = ctx
                .call(
                    "create_array",
                    &[],
                    Some(&CreateArrayRequest {
                        name,
                        level,
                        devices: ctx.local_paths(devices),
                        spares: ctx.local_paths(spares),
                        chunk_bytes: chunk,
                        copies,
                        force,
                    }),
                )
                .await?;
            ctx.show(&v, |x: ArrayInfo| array_detail(&x))
        }
        ArrayCmd::AddSpare { id, device, force } => {
            let v = ctx
                .call(
                    "add_spare",
                    &[&id],
                    Some(&AddSpareRequest {
                        device: ctx.local_path(device),
                        force,
                    }),
                )
                .await?;
            ctx.show(&v, |x: ArrayInfo| array_detail(&x))
        }
        ArrayCmd::Replace {
            id,
            role,
            device,
            force,
        } => {
            let v = ctx
                .call(
                    "replace_member",
                    &[&id],
                    Some(&ReplaceRequest {
                        role,
                        device: device.map(|d| ctx.local_path(d)),
                        force,
                    }),
                )
                .await?;
            ctx.show(&v, |x: ArrayInfo| array_detail(&x))
        }
        ArrayCmd::Fail { id, role } => {
            let v = ctx
                .call("fail_member", &[&id], Some(&FailMemberRequest { role }))
                .await?;
            ctx.show(&v, |x: ArrayInfo| array_detail(&x))
        }
        ArrayCmd::Scrub {
            id,
            no_repair,
            wait,
        } => {
            let v = ctx
                .call(
                    "scrub_array",
                    &[&id],
                    Some(&ScrubRequest { repair: !no_repair }),
                )
                .await?;
            start_job(ctx, &v, "Scrub", wait).await
        }
        ArrayCmd::Throttle { id, rate: bps } => {
            let v = ctx
                .call(
                    "throttle_array",
                    &[&id],
                    Some(&ThrottleRequest { bytes_per_sec: bps }),
                )
                .await?;
            if ctx.json {
                out(&json(&v));
            } else {
                let a: ArrayInfo = typed(&v)?;
                out(&if bps == 0 {
                    format!("Rebuilds of array {} are not throttled.", a.name)
                } else {
                    format!(
                        "Rebuilds of array {} are limited to {}/s.",
                        a.name,
                        size(bps)
                    )
                });
            }
            Ok(())
        }
    }
}

/// After an operation answered with a [`JobRef`]: print it, or wait for the job.
async fn start_job(ctx: &Ctx, v: &Value, what: &str, wait: bool) -> Result<(), Fail> {
    let r: JobRef = typed(v)?;
    if !wait {
        return ctx.show(v, |r: JobRef| {
            format!(
                "{what} started: job {id}\nFollow it with `dw job wait {id}`.",
                id = r.job_id
            )
        });
    }
    if !ctx.json {
        eprintln!("dw: {what} started: job {}", r.job_id);
    }
    ctx.wait_and_report(&r.job_id).await
}

// ------------------------------------------------------------------------------------ VDEs

fn vde_detail(v: &VdeInfo) -> String {
    let mut pairs = vec![
        ("Name", v.name.clone()),
        ("ID", v.id.clone()),
        ("State", v.state.clone()),
        ("Reason", opt(v.reason.as_deref())),
        ("Backing", v.backing.clone()),
        ("Profile", opt(v.profile.as_deref())),
        ("Contact", opt(v.admin_contact.as_deref())),
        ("Unlocked by", opt(v.unlocked_by.as_deref())),
        (
            "Reseal",
            if v.reseal_recommended {
                format!(
                    "recommended: the measured state changed; once trusted run `dw vde reseal {}`",
                    v.name
                )
            } else {
                String::new()
            },
        ),
    ];
    if let Some(c) = v.capacity {
        pairs.extend([
            ("Device", size(c.device_bytes)),
            (
                "Data",
                format!("{} ({} free)", size(c.data_bytes), size(c.free_bytes)),
            ),
            ("Logical data", size(c.logical_bytes)),
            ("Stored data", size(c.stored_bytes)),
            ("Retained", size(c.retained_bytes)),
            (
                "Metadata",
                format!(
                    "{} of {} used",
                    size(c.metadata_used),
                    size(c.metadata_bytes)
                ),
            ),
            ("Healed", c.healed.to_string()),
        ]);
    }
    kv(&pairs)
}

fn vde_free(v: &VdeInfo) -> String {
    v.capacity
        .map(|c| format!("{} of {}", size(c.free_bytes), size(c.data_bytes)))
        .unwrap_or_default()
}

fn policy_table(p: &PolicyDto) -> String {
    let mut t = Table::new(&["SETTING", "VALUE", "ENFORCED"]);
    if let Some(pr) = &p.profile {
        t.row(vec!["profile".into(), pr.clone(), String::new()]);
    }
    for (k, s) in [
        ("compression", &p.compression),
        ("encryption", &p.encryption),
        ("verify_checksums", &p.verify_checksums),
        ("versioning", &p.versioning),
        ("retention", &p.retention),
        ("quota_bytes", &p.quota_bytes),
    ] {
        if let Some(s) = s {
            t.row(vec![k.into(), s.value.clone(), yes_no(s.enforce)]);
        }
    }
    t.render("No settings of its own (everything is inherited).")
}

fn effective_table(p: EffectivePolicy) -> String {
    let mut t = Table::new(&["SETTING", "VALUE", "SOURCE"]);
    for s in p.settings {
        t.row(vec![s.name, s.value, s.source]);
    }
    t.render("No settings.")
}

fn tpm_request(pcrs: Vec<u8>, pin: Option<String>) -> TpmSlotRequest {
    TpmSlotRequest { pcrs, pin }
}

#[allow(clippy::too_many_lines)] // one arm per subcommand
async fn vde(ctx: &Ctx, c: VdeCmd) -> Result<(), Fail> {
    match c {
        VdeCmd::List => {
            let v = ctx.call("list_vdes", &[], NONE).await?;
            ctx.show(&v, |vdes: Vec<VdeInfo>| {
                let mut t = Table::new(&["NAME", "STATE", "BACKING", "FREE", "PROFILE", "ID"]);
                for v in vdes {
                    let free = vde_free(&v);
                    t.row(vec![
                        v.name,
                        v.state,
                        v.backing,
                        free,
                        opt(v.profile.as_deref()),
                        v.id,
                    ]);
                }
                t.render("No VDEs.")
            })
        }
        VdeCmd::Show { id } => {
            let v = ctx.call("get_vde", &[&id], NONE).await?;
            ctx.show(&v, |x: VdeInfo| vde_detail(&x))
        }
        VdeCmd::Create {
            name,
            array,
            file,
            size: file_size,
            profile,
            contact,
            passphrase_stdin,
            tpm,
            pcrs,
            pin_stdin,
        } => {
            let backing = match (array, file, file_size) {
                (Some(a), _, _) => VdeBacking::Array(a),
                (None, Some(path), Some(size_bytes)) => VdeBacking::File {
                    path: ctx.local_path(path.display().to_string()),
                    size_bytes,
                },
                _ => return Err(Fail::usage("give --array ID, or --file PATH --size SIZE")),
            };
            let mut secrets = Secrets::new();
            let passphrase = if passphrase_stdin {
                Some(secrets.read("recovery passphrase", true)?)
            } else {
                None
            };
            let pin = if pin_stdin {
                Some(secrets.read("TPM PIN", true)?)
            } else {
                None
            };
            let want_tpm = tpm || !pcrs.is_empty() || pin.is_some();
            let v = ctx
                .call(
                    "create_vde",
                    &[],
                    Some(&CreateVdeRequest {
                        name,
                        backing,
                        profile,
                        admin_contact: contact.unwrap_or_default(),
                        passphrase,
                        tpm: want_tpm.then(|| tpm_request(pcrs, pin)),
                    }),
                )
                .await?;
            ctx.show(&v, |r: CreateVdeResponse| {
                let mut s = vde_detail(&r.vde);
                if let Some(p) = r.recovery_passphrase {
                    s.push_str(&secret_block(
                        "Recovery passphrase (shown once: write it down and keep it safe; \
                         without it and without the other slots the data is lost)",
                        &p,
                    ));
                }
                s
            })
        }
        VdeCmd::Unlock {
            id,
            passphrase_stdin,
            pin_stdin,
        } => {
            let mut secrets = Secrets::new();
            let passphrase = if passphrase_stdin {
                Some(secrets.read("recovery passphrase", false)?)
            } else {
                None
            };
            let pin = if pin_stdin {
                Some(secrets.read("TPM PIN", false)?)
            } else {
                None
            };
            let v = ctx
                .call(
                    "unlock_vde",
                    &[&id],
                    Some(&UnlockRequest { passphrase, pin }),
                )
                .await?;
            ctx.show(&v, |r: UnlockResponse| {
                let mut s = vde_detail(&r.vde);
                if !r.attempts.is_empty() {
                    let mut a = String::new();
                    for line in &r.attempts {
                        let _ = writeln!(a, "  - {line}");
                    }
                    s.push_str(&section("Attempts", &a));
                }
                s
            })
        }
        VdeCmd::Lock { id } => {
            let v = ctx.call("lock_vde", &[&id], NONE).await?;
            ctx.show(&v, |x: VdeInfo| vde_detail(&x))
        }
        VdeCmd::Slots { id } => {
            let v = ctx.call("list_slots", &[&id], NONE).await?;
            ctx.show(&v, |slots: Vec<SlotInfo>| {
                let mut t =
                    Table::new(&["SLOT", "KIND", "LABEL", "CREATED", "LAST USED", "DETAILS"]);
                for s in slots {
                    t.row(vec![
                        s.id.to_string(),
                        s.kind,
                        s.label,
                        time(s.created),
                        opt_time(s.last_used),
                        s.details,
                    ]);
                }
                t.render("No key slots.")
            })
        }
        VdeCmd::AddSlot {
            id,
            kind,
            label,
            passphrase_stdin,
            pcrs,
            pin_stdin,
            endpoint,
            cert_sha256,
            token_stdin,
        } => {
            let mut secrets = Secrets::new();
            if kind != SlotKind::Peer
                && (endpoint.is_some() || cert_sha256.is_some() || token_stdin)
            {
                return Err(Fail::usage(
                    "--endpoint, --cert-sha256 and --token-stdin are for peer slots",
                ));
            }
            let req = match kind {
                SlotKind::Passphrase => {
                    if pin_stdin || !pcrs.is_empty() {
                        return Err(Fail::usage("--pcrs and --pin-stdin are for tpm2 slots"));
                    }
                    AddSlotRequest {
                        kind: "passphrase".into(),
                        label: label.unwrap_or_default(),
                        passphrase: if passphrase_stdin {
                            Some(secrets.read("passphrase", true)?)
                        } else {
                            None
                        },
                        tpm: None,
                        peer: None,
                    }
                }
                SlotKind::Tpm2 => {
                    if passphrase_stdin {
                        return Err(Fail::usage("--passphrase-stdin is for passphrase slots"));
                    }
                    let pin = if pin_stdin {
                        Some(secrets.read("TPM PIN", true)?)
                    } else {
                        None
                    };
                    AddSlotRequest {
                        kind: "tpm2".into(),
                        label: label.unwrap_or_default(),
                        passphrase: None,
                        tpm: Some(tpm_request(pcrs, pin)),
                        peer: None,
                    }
                }
                SlotKind::Peer => {
                    if passphrase_stdin || pin_stdin {
                        return Err(Fail::usage(
                            "--passphrase-stdin and --pin-stdin are not for peer slots",
                        ));
                    }
                    let (Some(endpoint), Some(cert_sha256), true) =
                        (endpoint, cert_sha256, token_stdin)
                    else {
                        return Err(Fail::usage(
                            "a peer slot needs --endpoint, --cert-sha256 and --token-stdin",
                        ));
                    };
                    AddSlotRequest {
                        kind: "peer".into(),
                        label: label.unwrap_or_default(),
                        passphrase: None,
                        tpm: None,
                        peer: Some(PeerSlotRequest {
                            endpoint,
                            cert_sha256,
                            token: secrets.read("enrollment token", false)?,
                            pcrs,
                        }),
                    }
                }
                SlotKind::SevSnp => {
                    if passphrase_stdin || pin_stdin || !pcrs.is_empty() {
                        return Err(Fail::usage("SEV-SNP slots take no options but --label"));
                    }
                    AddSlotRequest {
                        kind: "sev_snp".into(),
                        label: label.unwrap_or_default(),
                        passphrase: None,
                        tpm: None,
                        peer: None,
                    }
                }
            };
            let v = ctx.call("add_slot", &[&id], Some(&req)).await?;
            ctx.show(&v, |r: AddSlotResponse| {
                let mut s = format!(
                    "Added {} slot {} ({}).\n",
                    r.slot.kind, r.slot.id, r.slot.label
                );
                if let Some(p) = r.passphrase {
                    s.push_str(&secret_block("Passphrase (shown once: keep it safe)", &p));
                }
                s
            })
        }
        VdeCmd::RemoveSlot { id, slot } => {
            ctx.call("remove_slot", &[&id, &slot.to_string()], NONE)
                .await?;
            ctx.done(&format!("Removed slot {slot} of VDE {id}."));
            Ok(())
        }
        VdeCmd::Reseal { id, pin_stdin } => {
            let pin = if pin_stdin {
                Some(Secrets::new().read("TPM PIN", false)?)
            } else {
                None
            };
            let v = ctx
                .call("reseal_vde", &[&id], Some(&ResealRequest { pin }))
                .await?;
            ctx.show(&v, |r: ResealResponse| {
                if r.slots.is_empty() {
                    return "No slot was re-sealed (none is bound to the measured boot state)."
                        .into();
                }
                let mut s = String::from("Re-sealed to the current state:\n");
                for line in r.slots {
                    let _ = writeln!(s, "  - {line}");
                }
                s
            })
        }
        VdeCmd::RotateKey { id, wait } => {
            let v = ctx.call("rotate_key", &[&id], NONE).await?;
            start_job(ctx, &v, "Key rotation", wait).await
        }
        VdeCmd::Audit { id } => {
            let v = ctx.call("key_audit", &[&id], NONE).await?;
            ctx.show(&v, |entries: Vec<AuditEntryInfo>| {
                let mut t = Table::new(&["SEQ", "TIME", "ACTION"]);
                for e in entries {
                    t.row(vec![e.seq.to_string(), time(e.time), e.action]);
                }
                t.render("The audit log is empty.")
            })
        }
        VdeCmd::Policy { id } => {
            let v = ctx.call("get_vde_policy", &[&id], NONE).await?;
            ctx.show(&v, |p: PolicyDto| policy_table(&p))
        }
        VdeCmd::SetPolicy { id, edit } => {
            let current: PolicyDto = if edit.replace {
                PolicyDto::default()
            } else {
                typed(&ctx.call("get_vde_policy", &[&id], NONE).await?)?
            };
            let policy = edited(current, &edit)?;
            let v = ctx.call("set_vde_policy", &[&id], Some(&policy)).await?;
            ctx.show(&v, |p: PolicyDto| policy_table(&p))
        }
    }
}

fn edited(current: PolicyDto, edit: &PolicyEdit) -> Result<PolicyDto, Fail> {
    if edit.set.is_empty() && edit.unset.is_empty() && !edit.replace {
        return Err(Fail::usage(
            "nothing to change: give --set KEY=VALUE[!], --unset KEY or --replace",
        ));
    }
    Ok(apply_policy(current, &edit.set, &edit.unset))
}

// ------------------------------------------------------------------------------------ containers

fn container_detail(c: &ContainerInfo) -> String {
    let mut s = kv(&[
        ("Name", c.name.clone()),
        ("Kind", c.kind.clone()),
        ("VDE", c.vde.clone()),
        ("Size", opt_size(c.size_bytes)),
        ("Created", time(c.created)),
        ("Record size", size(u64::from(c.record_size))),
        (
            "Objects",
            if c.kind == "bucket" {
                c.objects.to_string()
            } else {
                String::new()
            },
        ),
        ("Logical data", size(c.logical_bytes)),
        ("Stored data", size(c.stored_bytes)),
        ("Retained", size(c.retained_bytes)),
        ("Owner", opt(c.owner.as_deref())),
        ("NBD export", opt(c.nbd_export.as_deref())),
    ]);
    s.push_str(&section("Own policy", &policy_table(&c.policy)));
    s
}

async fn container(ctx: &Ctx, c: ContainerCmd) -> Result<(), Fail> {
    match c {
        ContainerCmd::List => {
            let v = ctx.call("list_containers", &[], NONE).await?;
            ctx.show(&v, |list: Vec<ContainerInfo>| {
                let mut t = Table::new(&[
                    "NAME", "KIND", "SIZE", "OBJECTS", "LOGICAL", "STORED", "OWNER", "VDE",
                ]);
                for c in list {
                    let bucket = c.kind == "bucket";
                    t.row(vec![
                        c.name,
                        c.kind,
                        opt_size(c.size_bytes),
                        if bucket {
                            c.objects.to_string()
                        } else {
                            String::new()
                        },
                        size(c.logical_bytes),
                        size(c.stored_bytes),
                        opt(c.owner.as_deref()),
                        c.vde,
                    ]);
                }
                t.render("No buckets or volumes.")
            })
        }
        ContainerCmd::Show { name } => {
            let v = ctx.call("get_container", &[&name], NONE).await?;
            ctx.show(&v, |x: ContainerInfo| container_detail(&x))
        }
        ContainerCmd::Create {
            name,
            kind,
            size: size_bytes,
            vde,
            profile,
            set,
            record_size,
            owner,
        } => {
            let policy = (profile.is_some() || !set.is_empty()).then(|| {
                let mut p = apply_policy(PolicyDto::default(), &set, &[]);
                if profile.is_some() {
                    p.profile = profile;
                }
                p
            });
            let v = ctx
                .call(
                    "create_container",
                    &[],
                    Some(&CreateContainerRequest {
                        name,
                        kind,
                        vde,
                        size_bytes,
                        policy,
                        record_size,
                        owner,
                    }),
                )
                .await?;
            ctx.show(&v, |x: ContainerInfo| container_detail(&x))
        }
        ContainerCmd::Delete { name } => {
            ctx.call("delete_container", &[&name], NONE).await?;
            ctx.done(&format!("Deleted {name}."));
            Ok(())
        }
        ContainerCmd::Policy { name } => {
            let v = ctx.call("get_policy", &[&name], NONE).await?;
            ctx.show(&v, effective_table)
        }
        ContainerCmd::SetPolicy { name, edit } => {
            let current = if edit.replace {
                PolicyDto::default()
            } else {
                typed::<ContainerInfo>(&ctx.call("get_container", &[&name], NONE).await?)?.policy
            };
            let policy = edited(current, &edit)?;
            let v = ctx.call("set_policy", &[&name], Some(&policy)).await?;
            ctx.show(&v, effective_table)
        }
    }
}

async fn snapshot(ctx: &Ctx, c: SnapshotCmd) -> Result<(), Fail> {
    match c {
        SnapshotCmd::List { container } => {
            let v = ctx.call("list_snapshots", &[&container], NONE).await?;
            ctx.show(&v, |list: Vec<SnapshotInfo>| {
                let mut t = Table::new(&["NAME", "CREATED", "UNIQUE"]);
                for s in list {
                    t.row(vec![s.name, time(s.created), size(s.unique_bytes)]);
                }
                t.render("No snapshots.")
            })
        }
        SnapshotCmd::Create { container, name } => {
            let v = ctx
                .call(
                    "create_snapshot",
                    &[&container],
                    Some(&CreateSnapshotRequest { name }),
                )
                .await?;
            ctx.show(&v, |s: SnapshotInfo| {
                format!(
                    "Snapshot {container}@{} taken at {}.",
                    s.name,
                    time(s.created)
                )
            })
        }
        SnapshotCmd::Delete { container, name } => {
            ctx.call("delete_snapshot", &[&container, &name], NONE)
                .await?;
            ctx.done(&format!("Deleted snapshot {container}@{name}."));
            Ok(())
        }
        SnapshotCmd::Rollback { container, name } => {
            let v = ctx.call("rollback", &[&container, &name], NONE).await?;
            ctx.show(&v, |c: ContainerInfo| {
                format!(
                    "Rolled {} back to snapshot {name}.\n\n{}",
                    c.name,
                    container_detail(&c)
                )
            })
        }
    }
}

// ------------------------------------------------------------------------------------ jobs

fn progress(j: &JobInfo) -> String {
    if j.total == 0 {
        if j.done == 0 {
            return String::new();
        }
        return format!("{} {}", j.done, j.unit);
    }
    let amount = if j.unit == "bytes" {
        format!("{} of {}", size(j.done), size(j.total))
    } else {
        format!("{} of {} {}", j.done, j.total, j.unit)
    };
    format!("{} ({amount})", percent(j.done, j.total))
}

fn job_detail(j: &JobInfo) -> String {
    let mut s = kv(&[
        ("Job", j.id.clone()),
        ("Kind", j.kind.clone()),
        ("Target", j.target.clone()),
        ("State", j.state.clone()),
        ("Progress", progress(j)),
        ("Started", time(j.started)),
        ("Finished", opt_time(j.finished)),
        ("Message", opt(j.message.as_deref())),
    ]);
    if let Some(r) = &j.result {
        s.push_str(&section("Result", &format!("{}\n", json(r))));
    }
    s
}

async fn job(ctx: &Ctx, c: JobCmd) -> Result<(), Fail> {
    match c {
        JobCmd::List => {
            let v = ctx.call("list_jobs", &[], NONE).await?;
            ctx.show(&v, |jobs: Vec<JobInfo>| {
                let mut t = Table::new(&["ID", "KIND", "STATE", "PROGRESS", "STARTED", "TARGET"]);
                for j in jobs {
                    let p = progress(&j);
                    t.row(vec![j.id, j.kind, j.state, p, time(j.started), j.target]);
                }
                t.render("No jobs since dwd started.")
            })
        }
        JobCmd::Show { id } => {
            let v = ctx.call("get_job", &[&id], NONE).await?;
            ctx.show(&v, |x: JobInfo| job_detail(&x))
        }
        JobCmd::Wait { id } => ctx.wait_and_report(&id).await,
        JobCmd::Cancel { id } => {
            let v = ctx.call("cancel_job", &[&id], NONE).await?;
            ctx.show(&v, |j: JobInfo| {
                format!("Asked job {} to stop.\n\n{}", j.id, job_detail(&j))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every endpoint of the API is reachable from a command: its operation id is called here
    /// (the event stream through `Client::events`), and docs/CLI.md names the command.
    #[test]
    fn every_endpoint_has_a_command() {
        const COMMANDS: &[(&str, &str)] = &[
            ("health", "dw health"),
            ("info", "dw info"),
            ("devices", "dw devices"),
            ("events", "dw events"),
            ("openapi", "dw openapi"),
            ("metrics", "dw metrics"),
            ("login", "dw login"),
            ("logout", "dw logout"),
            ("list_users", "dw user list"),
            ("create_user", "dw user add"),
            ("delete_user", "dw user delete"),
            ("set_password", "dw user passwd"),
            ("list_tokens", "dw token list"),
            ("create_token", "dw token create"),
            ("delete_token", "dw token delete"),
            ("list_s3_keys", "dw s3-key list"),
            ("create_s3_key", "dw s3-key create"),
            ("delete_s3_key", "dw s3-key delete"),
            ("grant_s3_key", "dw s3-key grant"),
            ("plan_array", "dw array plan"),
            ("list_arrays", "dw array list"),
            ("create_array", "dw array create"),
            ("get_array", "dw array show"),
            ("add_spare", "dw array add-spare"),
            ("replace_member", "dw array replace"),
            ("fail_member", "dw array fail"),
            ("scrub_array", "dw array scrub"),
            ("throttle_array", "dw array throttle"),
            ("list_vdes", "dw vde list"),
            ("create_vde", "dw vde create"),
            ("get_vde", "dw vde show"),
            ("unlock_vde", "dw vde unlock"),
            ("lock_vde", "dw vde lock"),
            ("list_slots", "dw vde slots"),
            ("add_slot", "dw vde add-slot"),
            ("remove_slot", "dw vde remove-slot"),
            ("reseal_vde", "dw vde reseal"),
            ("rotate_key", "dw vde rotate-key"),
            ("key_audit", "dw vde audit"),
            ("get_vde_policy", "dw vde policy"),
            ("set_vde_policy", "dw vde set-policy"),
            ("list_containers", "dw container list"),
            ("create_container", "dw container create"),
            ("get_container", "dw container show"),
            ("delete_container", "dw container delete"),
            ("get_policy", "dw container policy"),
            ("set_policy", "dw container set-policy"),
            ("list_snapshots", "dw snapshot list"),
            ("create_snapshot", "dw snapshot create"),
            ("delete_snapshot", "dw snapshot delete"),
            ("rollback", "dw snapshot rollback"),
            ("list_jobs", "dw job list"),
            ("get_job", "dw job show"),
            ("cancel_job", "dw job cancel"),
        ];
        let full = include_str!("cmd.rs");
        let source = &full[..full.find("#[cfg(test)]").unwrap_or(full.len())];
        let docs = include_str!("../../../docs/CLI.md");
        for e in dw_api::ENDPOINTS {
            let (_, command) = COMMANDS
                .iter()
                .find(|(op, _)| *op == e.operation)
                .unwrap_or_else(|| panic!("no dw command for operation {}", e.operation));
            if e.operation != "events" {
                assert!(
                    source.contains(&format!("\"{}\"", e.operation)),
                    "operation {} is never called",
                    e.operation
                );
            }
            assert!(
                docs.contains(command),
                "docs/CLI.md does not document `{command}`"
            );
        }
        assert_eq!(COMMANDS.len(), dw_api::ENDPOINTS.len());
    }
}
