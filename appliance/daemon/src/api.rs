//! The management API over HTTP (axum): routing, authentication, errors, limits.
//!
//! The same router serves the Unix socket and HTTPS. A socket connection is the administrator
//! (the socket is owner-only); an HTTPS request must carry a bearer token, except login.
//! Handlers parse and check input, then run the appliance operation on the blocking pool.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json, Router};
use dw_api::types::{
    AddSlotRequest, AddSpareRequest, CreateArrayRequest, CreateContainerRequest,
    CreateS3KeyRequest, CreateS3KeyResponse, CreateSnapshotRequest, CreateTokenRequest,
    CreateTokenResponse, CreateUserRequest, CreateVdeRequest, ErrorBody, FailMemberRequest,
    GrantRequest, LoginRequest, LoginResponse, PlanRequest, PolicyDto, ReplaceRequest,
    ResealRequest, S3KeyInfo, ScrubRequest, SetPasswordRequest, ThrottleRequest, TokenInfo,
    UnlockRequest, UserInfo,
};
use futures::Stream;
use serde::de::DeserializeOwned;

use crate::appliance::Appliance;
use crate::auth::{AuthError, Principal};
use crate::error::{OpError, OpResult};

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        if matches!(e, OpError::Internal(_)) {
            tracing::error!("request failed: {e}");
        }
        Self::new(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.code(),
            e.to_string(),
        )
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::BadToken | AuthError::BadLogin => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            AuthError::RateLimited {
                retry_after_secs, ..
            } => Self {
                retry_after: Some(retry_after_secs),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            },
            e => OpError::from(e).into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                code: self.code.into(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// `Json` whose rejections are API errors with our body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(match e {
                JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body too large",
                    )
                }
                e => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
            }),
        }
    }
}

/// The client address of an HTTPS connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub IpAddr);

/// How a connection came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The owner-only Unix socket: acts as the administrator.
    Socket,
    /// HTTPS: needs a token.
    Https,
}

type AppState = Arc<Appliance>;
type ApiResult<T> = Result<T, ApiError>;

async fn run<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&Arc<Appliance>) -> OpResult<T> + Send + 'static,
) -> ApiResult<T> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(OpError::from)?
        .map_err(ApiError::from)
}

// ---------------------------------------------------------------------------------- middleware

async fn authenticate(
    State(app): State<AppState>,
    Extension(transport): Extension<Transport>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match transport {
        Transport::Socket => Principal {
            user: "root".into(),
            via: "socket".into(),
            session: None,
        },
        Transport::Https => {
            if req.uri().path() == "/api/v1/auth/login" {
                return next.run(req).await;
            }
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let Some(token) = token else {
                return ApiError::from(AuthError::Missing).into_response();
            };
            match app.auth.authenticate(token) {
                Ok(p) => p,
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    let mutating = req.method() != http::Method::GET;
    if mutating {
        tracing::info!(
            user = principal.user,
            via = principal.via,
            "{} {}",
            req.method(),
            req.uri().path()
        );
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Answers given before the request content was read (401, 413, 429, 503) close the connection
/// and say so; see `dw_s3::linger`.
async fn close_unread(req: Request, next: Next) -> Response {
    let version = req.version();
    let (parts, body) = req.into_parts();
    let (body, end) = dw_s3::linger::track(body);
    let mut resp = next
        .run(Request::from_parts(parts, axum::body::Body::new(body)))
        .await;
    end.close_if_unread(version, &mut resp);
    resp
}

async fn limit(
    Extension(sem): Extension<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    // Event streams are long-lived and do no work: they do not count.
    if req.uri().path() == "/api/v1/events" {
        return next.run(req).await;
    }
    match sem.try_acquire() {
        Ok(_permit) => {
            let started = std::time::Instant::now();
            let path = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
            let method = req.method().to_string();
            let resp = next.run(req).await;
            crate::metrics::api_request(&method, &path, resp.status().as_u16(), started.elapsed());
            resp
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many requests at once: retry shortly",
        )
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------- system

async fn health(State(app): State<AppState>) -> ApiResult<Json<dw_api::types::Health>> {
    run(&app, |a| Ok(a.health())).await.map(Json)
}

async fn info(State(app): State<AppState>) -> Json<dw_api::types::Info> {
    Json(app.info())
}

async fn devices(State(app): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    run(&app, |a| Ok(a.devices())).await.map(Json)
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        dw_api::openapi_json(),
    )
        .into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&app),
    )
        .into_response()
}

async fn events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = app.events.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => dw_api::types::Event {
                seq: 0,
                time: crate::util::now_secs(),
                kind: "alert".into(),
                level: "warning".into(),
                message: format!("{n} events were dropped because this client was too slow"),
                data: serde_json::Value::Null,
            },
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Some((
            Ok(SseEvent::default().event(ev.kind.clone()).data(data)),
            rx,
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---------------------------------------------------------------------------------- auth

async fn login(
    State(app): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let ip = peer.map_or(IpAddr::from([127, 0, 0, 1]), |p| p.0.0);
    let (token, expires_at) = app.auth.login(&req.username, &req.password, ip).await?;
    Ok(Json(LoginResponse { token, expires_at }))
}

async fn logout(
    Extension(p): Extension<Principal>,
    State(app): State<AppState>,
) -> ApiResult<StatusCode> {
    match &p.session {
        Some(h) => {
            app.auth.logout(h);
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "this request was not made with a session token (API tokens are revoked with DELETE /api/v1/tokens/{id})",
        )),
    }
}

async fn list_users(State(app): State<AppState>) -> ApiResult<Json<Vec<UserInfo>>> {
    run(&app, |a| {
        Ok(a.auth
            .users()?
            .into_iter()
            .map(|u| UserInfo {
                name: u.name,
                created: u.created,
            })
            .collect())
    })
    .await
    .map(Json)
}

async fn create_user(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<Json<UserInfo>> {
    run(&app, move |a| {
        let u = a.auth.create_user(&req.name, &req.password)?;
        Ok(UserInfo {
            name: u.name,
            created: u.created,
        })
    })
    .await
    .map(Json)
}

async fn delete_user(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    run(&app, move |a| Ok(a.auth.delete_user(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_password(
    State(app): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SetPasswordRequest>,
) -> ApiResult<StatusCode> {
    run(&app, move |a| {
        Ok(a.auth.set_password(&name, &req.password)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn token_info(t: &crate::state::TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        user: t.user.clone(),
        created: t.created,
        expires_at: t.expires_at,
    }
}

async fn list_tokens(State(app): State<AppState>) -> ApiResult<Json<Vec<TokenInfo>>> {
    run(&app, |a| {
        Ok(a.auth.tokens()?.iter().map(token_info).collect())
    })
    .await
    .map(Json)
}

async fn create_token(
    State(app): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> ApiResult<Json<CreateTokenResponse>> {
    run(&app, move |a| {
        let (rec, token) = a
            .auth
            .create_token(&p.user, &req.name, req.expires_in_days)?;
        Ok(CreateTokenResponse {
            info: token_info(&rec),
            token,
        })
    })
    .await
    .map(Json)
}

async fn delete_token(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    run(&app, move |a| Ok(a.auth.delete_token(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------- S3 keys

async fn list_s3_keys(State(app): State<AppState>) -> ApiResult<Json<Vec<S3KeyInfo>>> {
    run(&app, |a| crate::s3keys::list(&a.db)).await.map(Json)
}

async fn create_s3_key(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateS3KeyRequest>,
) -> ApiResult<Json<CreateS3KeyResponse>> {
    run(&app, move |a| crate::s3keys::create(&a.db, &req))
        .await
        .map(Json)
}

async fn delete_s3_key(
    State(app): State<AppState>,
    Path(k): Path<String>,
) -> ApiResult<StatusCode> {
    run(&app, move |a| crate::s3keys::delete(&a.db, &k)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_s3_key(
    State(app): State<AppState>,
    Path((k, bucket)): Path<(String, String)>,
    ApiJson(req): ApiJson<GrantRequest>,
) -> ApiResult<Json<S3KeyInfo>> {
    run(&app, move |a| {
        crate::s3keys::grant(a, &k, &bucket, &req.access)
    })
    .await
    .map(Json)
}

// ---------------------------------------------------------------------------------- arrays

async fn plan_array(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<PlanRequest>,
) -> ApiResult<Json<dw_api::types::PlanResponse>> {
    run(&app, move |a| a.plan(&req.devices)).await.map(Json)
}

async fn list_arrays(
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<dw_api::types::ArrayInfo>>> {
    run(&app, |a| Ok(a.arrays())).await.map(Json)
}

async fn create_array(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateArrayRequest>,
) -> ApiResult<Json<dw_api::types::ArrayInfo>> {
    run(&app, move |a| a.create_array(&req)).await.map(Json)
}

async fn get_array(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dw_api::types::ArrayInfo>> {
    run(&app, move |a| a.array_info(&id)).await.map(Json)
}

async fn add_spare(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AddSpareRequest>,
) -> ApiResult<Json<dw_api::types::ArrayInfo>> {
    run(&app, move |a| a.add_spare(&id, &req.device, req.force))
        .await
        .map(Json)
}

async fn replace_member(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReplaceRequest>,
) -> ApiResult<Json<dw_api::types::ArrayInfo>> {
    run(&app, move |a| {
        a.replace(&id, req.role, req.device.as_deref(), req.force)
    })
    .await
    .map(Json)
}

async fn fail_member(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<FailMemberRequest>,
) -> ApiResult<Json<dw_api::types::ArrayInfo>> {
    run(&app, move |a| a.fail_member(&id, req.role))
        .await
        .map(Json)
}

async fn scrub_array(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ScrubRequest>,
) -> ApiResult<Json<dw_api::types::JobRef>> {
    run(&app, move |a| a.scrub(&id, req.repair)).await.map(Json)
}

async fn throttle_array(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ThrottleRequest>,
) -> ApiResult<Json<dw_api::types::ArrayInfo>> {
    run(&app, move |a| a.throttle(&id, req.bytes_per_sec))
        .await
        .map(Json)
}

// ---------------------------------------------------------------------------------- VDEs

async fn list_vdes(State(app): State<AppState>) -> ApiResult<Json<Vec<dw_api::types::VdeInfo>>> {
    run(&app, |a| Ok(a.vdes())).await.map(Json)
}

async fn create_vde(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateVdeRequest>,
) -> ApiResult<Json<dw_api::types::CreateVdeResponse>> {
    run(&app, move |a| a.create_vde(&req)).await.map(Json)
}

async fn get_vde(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dw_api::types::VdeInfo>> {
    run(&app, move |a| a.vde_info(&id)).await.map(Json)
}

async fn unlock_vde(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UnlockRequest>,
) -> ApiResult<Json<dw_api::types::UnlockResponse>> {
    run(&app, move |a| {
        a.unlock(&id, req.passphrase.as_deref(), req.pin.as_deref())
    })
    .await
    .map(Json)
}

async fn lock_vde(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dw_api::types::VdeInfo>> {
    run(&app, move |a| a.lock(&id)).await.map(Json)
}

async fn list_slots(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<dw_api::types::SlotInfo>>> {
    run(&app, move |a| a.slots(&id)).await.map(Json)
}

async fn add_slot(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AddSlotRequest>,
) -> ApiResult<Json<dw_api::types::AddSlotResponse>> {
    run(&app, move |a| a.add_slot(&id, &req)).await.map(Json)
}

async fn remove_slot(
    State(app): State<AppState>,
    Path((id, slot)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    run(&app, move |a| a.remove_slot(&id, &slot)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reseal_vde(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResealRequest>,
) -> ApiResult<Json<dw_api::types::ResealResponse>> {
    run(&app, move |a| a.reseal(&id, req.pin.as_deref()))
        .await
        .map(Json)
}

async fn rotate_key(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dw_api::types::JobRef>> {
    run(&app, move |a| a.rotate_key(&id)).await.map(Json)
}

async fn key_audit(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<dw_api::types::AuditEntryInfo>>> {
    run(&app, move |a| a.audit(&id)).await.map(Json)
}

async fn get_vde_policy(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PolicyDto>> {
    run(&app, move |a| a.vde_policy(&id)).await.map(Json)
}

async fn set_vde_policy(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PolicyDto>,
) -> ApiResult<Json<PolicyDto>> {
    run(&app, move |a| a.set_vde_policy(&id, &req))
        .await
        .map(Json)
}

// ---------------------------------------------------------------------------------- containers

async fn list_containers(
    State(app): State<AppState>,
) -> ApiResult<Json<Vec<dw_api::types::ContainerInfo>>> {
    run(&app, |a| a.containers()).await.map(Json)
}

async fn create_container(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<CreateContainerRequest>,
) -> ApiResult<Json<dw_api::types::ContainerInfo>> {
    run(&app, move |a| a.create_container(&req, false))
        .await
        .map(Json)
}

async fn get_container(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<dw_api::types::ContainerInfo>> {
    run(&app, move |a| a.container(&name)).await.map(Json)
}

async fn delete_container(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    run(&app, move |a| a.delete_container(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_policy(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<dw_api::types::EffectivePolicy>> {
    run(&app, move |a| a.effective_policy(&name))
        .await
        .map(Json)
}

async fn set_policy(
    State(app): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PolicyDto>,
) -> ApiResult<Json<dw_api::types::EffectivePolicy>> {
    run(&app, move |a| a.set_policy(&name, &req))
        .await
        .map(Json)
}

async fn list_snapshots(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<dw_api::types::SnapshotInfo>>> {
    run(&app, move |a| a.snapshots(&name)).await.map(Json)
}

async fn create_snapshot(
    State(app): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreateSnapshotRequest>,
) -> ApiResult<Json<dw_api::types::SnapshotInfo>> {
    run(&app, move |a| a.create_snapshot(&name, &req.name))
        .await
        .map(Json)
}

async fn delete_snapshot(
    State(app): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    run(&app, move |a| a.delete_snapshot(&name, &snap)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rollback(
    State(app): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> ApiResult<Json<dw_api::types::ContainerInfo>> {
    run(&app, move |a| a.rollback(&name, &snap)).await.map(Json)
}

// ---------------------------------------------------------------------------------- jobs

async fn list_jobs(State(app): State<AppState>) -> Json<Vec<dw_api::types::JobInfo>> {
    Json(app.jobs.list().iter().map(|j| j.info()).collect())
}

async fn get_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dw_api::types::JobInfo>> {
    app.jobs
        .get(&id)
        .map(|j| Json(j.info()))
        .ok_or_else(|| OpError::NotFound(format!("no job {id:?}")).into())
}

async fn cancel_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<dw_api::types::JobInfo>> {
    let j = app
        .jobs
        .get(&id)
        .ok_or_else(|| ApiError::from(OpError::NotFound(format!("no job {id:?}"))))?;
    j.cancel();
    Ok(Json(j.info()))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see /api/v1/openapi.json)",
    )
}

async fn method_not_allowed(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method (see /api/v1/openapi.json)",
        )
        .into_response();
    }
    resp
}

/// Every route: (method, path, handler). Checked against [`dw_api::ENDPOINTS`] by the tests.
#[must_use]
pub fn routes() -> Vec<(dw_api::Method, &'static str, MethodRouter<AppState>)> {
    use dw_api::Method::{Delete as D, Get as G, Post as P, Put as U};
    vec![
        (G, "/api/v1/health", get(health)),
        (G, "/api/v1/info", get(info)),
        (G, "/api/v1/devices", get(devices)),
        (G, "/api/v1/events", get(events)),
        (G, "/api/v1/openapi.json", get(openapi)),
        (G, "/api/v1/metrics", get(metrics)),
        (P, "/api/v1/auth/login", post(login)),
        (P, "/api/v1/auth/logout", post(logout)),
        (G, "/api/v1/users", get(list_users)),
        (P, "/api/v1/users", post(create_user)),
        (D, "/api/v1/users/{name}", delete(delete_user)),
        (U, "/api/v1/users/{name}/password", put(set_password)),
        (G, "/api/v1/tokens", get(list_tokens)),
        (P, "/api/v1/tokens", post(create_token)),
        (D, "/api/v1/tokens/{id}", delete(delete_token)),
        (G, "/api/v1/s3/keys", get(list_s3_keys)),
        (P, "/api/v1/s3/keys", post(create_s3_key)),
        (D, "/api/v1/s3/keys/{access_key}", delete(delete_s3_key)),
        (
            U,
            "/api/v1/s3/keys/{access_key}/grants/{bucket}",
            put(grant_s3_key),
        ),
        (P, "/api/v1/arrays/plan", post(plan_array)),
        (G, "/api/v1/arrays", get(list_arrays)),
        (P, "/api/v1/arrays", post(create_array)),
        (G, "/api/v1/arrays/{id}", get(get_array)),
        (P, "/api/v1/arrays/{id}/spares", post(add_spare)),
        (P, "/api/v1/arrays/{id}/replace", post(replace_member)),
        (P, "/api/v1/arrays/{id}/fail", post(fail_member)),
        (P, "/api/v1/arrays/{id}/scrub", post(scrub_array)),
        (U, "/api/v1/arrays/{id}/throttle", put(throttle_array)),
        (G, "/api/v1/vdes", get(list_vdes)),
        (P, "/api/v1/vdes", post(create_vde)),
        (G, "/api/v1/vdes/{id}", get(get_vde)),
        (P, "/api/v1/vdes/{id}/unlock", post(unlock_vde)),
        (P, "/api/v1/vdes/{id}/lock", post(lock_vde)),
        (G, "/api/v1/vdes/{id}/slots", get(list_slots)),
        (P, "/api/v1/vdes/{id}/slots", post(add_slot)),
        (D, "/api/v1/vdes/{id}/slots/{slot}", delete(remove_slot)),
        (P, "/api/v1/vdes/{id}/reseal", post(reseal_vde)),
        (P, "/api/v1/vdes/{id}/rotate-key", post(rotate_key)),
        (G, "/api/v1/vdes/{id}/audit", get(key_audit)),
        (G, "/api/v1/vdes/{id}/policy", get(get_vde_policy)),
        (U, "/api/v1/vdes/{id}/policy", put(set_vde_policy)),
        (G, "/api/v1/containers", get(list_containers)),
        (P, "/api/v1/containers", post(create_container)),
        (G, "/api/v1/containers/{name}", get(get_container)),
        (D, "/api/v1/containers/{name}", delete(delete_container)),
        (G, "/api/v1/containers/{name}/policy", get(get_policy)),
        (U, "/api/v1/containers/{name}/policy", put(set_policy)),
        (
            G,
            "/api/v1/containers/{name}/snapshots",
            get(list_snapshots),
        ),
        (
            P,
            "/api/v1/containers/{name}/snapshots",
            post(create_snapshot),
        ),
        (
            D,
            "/api/v1/containers/{name}/snapshots/{snapshot}",
            delete(delete_snapshot),
        ),
        (
            P,
            "/api/v1/containers/{name}/snapshots/{snapshot}/rollback",
            post(rollback),
        ),
        (G, "/api/v1/jobs", get(list_jobs)),
        (G, "/api/v1/jobs/{id}", get(get_job)),
        (P, "/api/v1/jobs/{id}/cancel", post(cancel_job)),
    ]
}

/// The router for one transport.
pub fn router(app: Arc<Appliance>, transport: Transport) -> Router {
    let mut r: Router<AppState> = Router::new();
    for (_, path, h) in routes() {
        r = r.route(path, h);
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(
        app.cfg.api.max_concurrent_requests,
    ));
    r.fallback(not_found)
        .layer(axum::middleware::from_fn(method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            authenticate,
        ))
        .layer(axum::middleware::from_fn(limit))
        .layer(Extension(sem))
        .layer(Extension(transport))
        .layer(axum::extract::DefaultBodyLimit::max(
            app.cfg.api.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn(close_unread))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn router_matches_the_endpoint_table() {
        let ours: HashSet<(dw_api::Method, &str)> =
            routes().into_iter().map(|(m, p, _)| (m, p)).collect();
        let table: HashSet<(dw_api::Method, &str)> = dw_api::ENDPOINTS
            .iter()
            .map(|e| (e.method, e.path))
            .collect();
        let missing: Vec<_> = table.difference(&ours).collect();
        let extra: Vec<_> = ours.difference(&table).collect();
        assert!(missing.is_empty(), "documented but not routed: {missing:?}");
        assert!(extra.is_empty(), "routed but not documented: {extra:?}");
        assert_eq!(routes().len(), dw_api::ENDPOINTS.len());
    }
}
