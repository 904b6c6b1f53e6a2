//! The HTTP surface, one listener (127.0.0.1 by default): `/metrics`
//! (Prometheus), `/healthz` (alive), `/readyz` (every assigned partition
//! recovered and consuming), and `GET /v1/accounts/{id}/balance`, served
//! from RocksDB for accounts of partitions this instance owns, and
//! forwarded to the owner for the others (see `forward`). One endpoint
//! acts: `POST /v1/partitions/{p}/changelog/republish` asks the engine to
//! publish an owned partition's whole state to the changelog again (see
//! `republish`); it changes no state.
//!
//! It starts with the process, before Kafka is reached, so `/healthz`
//! answers while the broker is down. A flood of balance lookups cannot
//! take it down: RocksDB is read on the blocking pool (never on the
//! runtime that answers `/healthz` and `/metrics`), at most
//! [`MAX_LOOKUPS`] at a time (more get 503), each request within
//! [`REQUEST_TIMEOUT`], and bodies over [`MAX_BODY`] are refused.

use crate::metrics::Metrics;
use crate::rebalance::{Assignment, EngineContext};
use crate::restore::Purpose;
use accrual_core::accrue::balance_view;
use accrual_core::partitioner::Partitioner;
use accrual_core::rules::{Rules, Timeline};
use accrual_core::state::AccountState;
use accrual_store::Store;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Balance lookups served at once; more are refused with 503 at once
/// rather than queued behind a slow disk.
pub const MAX_LOOKUPS: usize = 32;
/// Longest any request may take (then 503).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body (the endpoints take none).
pub const MAX_BODY: u64 = 4096;

/// The running rules timeline, shared with the HTTP API.
pub type SharedTimeline = Arc<std::sync::RwLock<Arc<Timeline>>>;

/// What the handlers read; shared with the engine.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    /// Swapped on a rules reload.
    pub rules: SharedTimeline,
    pub assignment: Arc<Mutex<Assignment>>,
    /// Partitions of the input topic (0 until known).
    pub partitions: Arc<AtomicU32>,
    pub partitioner: Partitioner,
    /// Required as `Authorization: Bearer <token>` on account endpoints.
    pub token: Option<String>,
    pub metrics: Option<Arc<Metrics>>,
    /// Where lookups of other instances' partitions go.
    pub peers: Arc<crate::forward::Peers>,
    /// Whether the state has a changelog (`kafka.topics.changelog`).
    pub changelog: bool,
}

/// Whether the instance is ready, and if not, why.
pub fn readiness(a: &Assignment) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    if a.rebalances == 0 {
        why.push("no partitions assigned yet".to_string());
    }
    for (p, o) in &a.owned {
        if o.needs_recovery {
            why.push(format!("partition {p} is recovering"));
        }
    }
    for (p, r) in a.restoring.iter().filter(|(_, r)| r.purpose == Purpose::Restore) {
        let applied = r.watch.applied.load(std::sync::atomic::Ordering::Relaxed);
        why.push(format!(
            "partition {p} is restoring from the changelog: {applied} records applied, about {} left",
            r.watch.left()
        ));
    }
    for (p, reason) in &a.refused {
        why.push(format!("partition {p} refused: {reason}"));
    }
    if let Some(e) = &a.error {
        why.push(e.to_string());
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

/// Binds `listen` now (so a taken port fails the start) and serves on a
/// thread of its own.
pub fn serve(listen: &str, state: ApiState) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let lookups = Arc::new(Semaphore::new(MAX_LOOKUPS));
    let accounts = Router::new()
        .route("/v1/accounts/{id}/balance", get(balance))
        .route_layer(middleware::from_fn_with_state(lookups, limit_lookups));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/v1/partitions/{partition}/changelog/republish", post(republish))
        .merge(accounts)
        .layer(middleware::from_fn(guard))
        .with_state(state);
    std::thread::Builder::new().name("accrual-http".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "HTTP server could not start");
                return;
            }
        };
        runtime.block_on(async move {
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => axum::serve(listener, app).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
    })?;
    tracing::info!(%address, "HTTP listening");
    Ok(address)
}

/// Every request: a body limit and a time limit.
async fn guard(request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) || request.headers().contains_key(header::TRANSFER_ENCODING) {
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "request bodies are not accepted"}),
        );
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "the request timed out"})),
    }
}

/// At most [`MAX_LOOKUPS`] account lookups at once; the rest are told to
/// come back.
async fn limit_lookups(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        let mut response = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "too many lookups at once; retry"}),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string() + "\n").into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn metrics(State(state): State<ApiState>) -> Response {
    match &state.metrics {
        Some(m) => {
            let mut response = m.render().into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics are not installed\n").into_response(),
    }
}

async fn ready(State(state): State<ApiState>) -> Response {
    let a = EngineContext::lock(&state.assignment);
    match readiness(&a) {
        Ok(()) => {
            // Paused while its state is published again, but its lookups
            // are answered: still ready.
            let republishing: Vec<u32> = a.republishing().collect();
            if republishing.is_empty() {
                json_response(StatusCode::OK, json!({"ready": true}))
            } else {
                json_response(StatusCode::OK, json!({"ready": true, "republishing": republishing}))
            }
        }
        Err(why) => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false, "reasons": why})),
    }
}

/// What this instance can say of a partition's accounts.
enum LocalAnswer {
    /// It owns the partition, ready.
    Here,
    /// It is assigned the partition, but cannot answer yet: why.
    Unavailable(String),
}

/// `None`: the partition is not assigned here.
fn local_answer(a: &Assignment, partition: u32) -> Option<LocalAnswer> {
    let restoring = a.restoring.get(&partition).map(|r| r.purpose);
    if restoring == Some(Purpose::Republish) {
        // Its state does not change while it is published.
        return Some(LocalAnswer::Here);
    }
    if restoring.is_some() {
        return Some(LocalAnswer::Unavailable(format!(
            "partition {partition} is restoring from the changelog; retry shortly"
        )));
    }
    if let Some(reason) = a.refused.get(&partition) {
        return Some(LocalAnswer::Unavailable(format!("partition {partition} is refused here: {reason}")));
    }
    match a.owned.get(&partition)? {
        o if o.needs_recovery => {
            Some(LocalAnswer::Unavailable(format!("partition {partition} is recovering; retry shortly")))
        }
        _ => Some(LocalAnswer::Here),
    }
}

/// `id` as a URL path segment (unreserved characters as they are).
fn percent_encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Constant-time comparison, so the token cannot be guessed by timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(token) = state.token.as_deref() else { return true };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    same(given.as_bytes(), token.as_bytes())
}

fn unauthorized() -> Response {
    let mut response =
        json_response(StatusCode::UNAUTHORIZED, json!({"error": "a bearer token is required"}));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Asks the engine to publish `partition`'s whole state to the changelog
/// again (see `republish`): accepted (202) if this instance owns it, ready;
/// the log and `/readyz` ("republishing") say when it is done.
async fn republish(
    State(state): State<ApiState>,
    Path(partition): Path<u32>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let conflict =
        |why: String| json_response(StatusCode::CONFLICT, json!({"error": why, "partition": partition}));
    if !state.changelog {
        return conflict("the state has no changelog (kafka.topics.changelog) to publish to".into());
    }
    let mut a = EngineContext::lock(&state.assignment);
    match local_answer(&a, partition) {
        Some(LocalAnswer::Here) if a.owned.contains_key(&partition) => {}
        Some(LocalAnswer::Here) => {
            return conflict(format!("partition {partition}'s state is being published already"));
        }
        Some(LocalAnswer::Unavailable(why)) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": why, "partition": partition}),
            );
        }
        None => {
            drop(a);
            let mut body = json!({"error": format!("partition {partition} is not owned by this instance: ask its owner"), "partition": partition});
            if let Some((owner, url)) = state.peers.owner(partition) {
                body["owner"] = json!(owner);
                body["owner_url"] = json!(url);
            }
            return json_response(StatusCode::MISDIRECTED_REQUEST, body);
        }
    }
    a.republish_asked.insert(partition);
    tracing::info!(partition, "asked to publish the partition's whole state to the changelog again");
    json_response(
        StatusCode::ACCEPTED,
        json!({"partition": partition, "accepted": true, "message": "its state is published between two cycles; /readyz lists it under \"republishing\" until done, and the log says when"}),
    )
}

async fn balance(State(state): State<ApiState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let partitions = state.partitions.load(Ordering::Relaxed);
    if partitions == 0 {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the input topic's partitions are not known yet"}),
        );
    }
    let partition = state.partitioner.partition(id.as_bytes(), partitions);
    let answer = local_answer(&EngineContext::lock(&state.assignment), partition);
    match answer {
        Some(LocalAnswer::Here) => {}
        Some(LocalAnswer::Unavailable(why)) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": why, "partition": partition}),
            );
        }
        None => {
            let path = format!("/v1/accounts/{}/balance", percent_encode(&id));
            return state.peers.forward(partition, &path, &headers).await;
        }
    }
    // RocksDB blocks: on the blocking pool, never on the runtime.
    let (store, account_id) = (state.store.clone(), id.clone());
    let read = tokio::task::spawn_blocking(move || store.account(partition, &account_id)).await;
    let stored = match read.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, partition, "balance lookup failed");
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "the state store failed"}),
            );
        }
    };
    let Some(account) = stored else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown account", "partition": partition}),
        );
    };
    // The version in force at the account's time decides its caps' limits.
    let rules =
        state.rules.read().unwrap_or_else(std::sync::PoisonError::into_inner).at(account.watermark).clone();
    json_response(StatusCode::OK, balance_json(&id, partition, &account, &rules))
}

/// An account's balance as the lookup answers it: each program's amounts
/// in its own decimals, the tier and the caps, as of the account's time.
fn balance_json(id: &str, partition: u32, account: &AccountState, rules: &Rules) -> Value {
    let view = balance_view(rules, account, 5);
    let programs: Vec<Value> = view
        .programs
        .iter()
        .map(|p| {
            let money = |d: rust_decimal::Decimal| accrual_core::money::with_scale(d, p.decimals).to_string();
            json!({
                "program": p.program,
                "unit": p.unit,
                "available": money(p.available),
                "pending": money(p.pending),
                "lifetime_earned": money(p.lifetime_earned),
                "redeemed": money(p.redeemed),
                "expired": money(p.expired),
                "owed": money(p.owed),
                "next_expiring": p.next_expiring.iter().map(|(at, amount)| json!({"at": at.to_string(), "amount": money(*amount)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let progress = view.tier_progress.as_ref().map(|t| {
        json!({
            "period": t.period,
            "value": t.value.to_string(),
            "next_tier": t.next.as_ref().map(|(n, _)| n.clone()),
            "next_threshold": t.next.as_ref().map(|(_, v)| v.to_string()),
        })
    });
    json!({
        "account_id": id,
        "partition": partition,
        "as_of": account.watermark.to_string(),
        "rules_version": rules.version.to_string(),
        "tier": view.tier,
        "tier_progress": progress,
        "programs": programs,
        "caps": view.caps.iter().map(|c| json!({
            "cap": c.cap,
            "description": c.description,
            "period": c.period,
            "measure": c.measure,
            "used": c.used.to_string(),
            "limit": c.limit.to_string(),
            "left": c.left.to_string(),
        })).collect::<Vec<_>>(),
    })
}
