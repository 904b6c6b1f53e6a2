//! Balance lookups for accounts another instance owns: forwarded to the
//! owner, the way Kafka Streams' interactive queries find a key's host.
//! The owner is the member the consumer group assigned the account's
//! partition to (see `owners`); its address comes from `http.peers` or
//! `http.peer_url`. Without an address the answer names the owner.

use crate::config::HttpConfig;
use crate::owners::Owners;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Set on a forwarded lookup (to the forwarding instance's id): its
/// receiver answers from its own state or not at all, never forwarding on.
pub const FORWARDED_BY: &str = "x-accrual-forwarded-by";
/// The instance whose state answered.
pub const SERVED_BY: &str = "x-accrual-served-by";
/// How long the owner has to answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer taken from an owner.
const MAX_ANSWER: usize = 1 << 20;

/// The other instances, as far as lookups need them.
pub struct Peers {
    /// This instance's id.
    pub instance: String,
    pub config: HttpConfig,
    pub owners: Arc<RwLock<Owners>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Peers {
    pub fn new(instance: String, config: HttpConfig, owners: Arc<RwLock<Owners>>) -> Peers {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Peers { instance, config, owners, client }
    }

    /// The instance the group gave `partition` to, if known and not this
    /// one, and its address, if configured.
    pub fn owner(&self, partition: u32) -> Option<(String, Option<String>)> {
        let owners = self.owners.read().unwrap_or_else(|p| p.into_inner());
        let owner = owners.by_partition.get(&partition).filter(|o| **o != self.instance)?.clone();
        let base = self.config.peer(&owner);
        Some((owner, base))
    }

    /// Answers a lookup (`path`) of an account of `partition`, which this
    /// instance does not own, from the partition's owner.
    pub async fn forward(&self, partition: u32, path: &str, headers: &HeaderMap) -> Response {
        let error = |status: StatusCode, body: serde_json::Value| super::api::json_response(status, body);
        if headers.contains_key(FORWARDED_BY) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                json!({"error": format!("partition {partition} is not owned by instance {} either: the group moved it; retry", self.instance), "partition": partition}),
            );
        }
        let owner =
            self.owners.read().unwrap_or_else(|p| p.into_inner()).by_partition.get(&partition).cloned();
        let Some(owner) = owner.filter(|o| *o != self.instance) else {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("no other instance is known to own partition {partition}: the group is rebalancing, or (on a broker that does not describe members' assignments) no changelog names its last writer; retry"), "partition": partition}),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        let Some(base) = self.config.peer(&owner) else {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                json!({"error": format!("partition {partition} is owned by instance {owner}; set http.peer_url or http.peers for lookups to be forwarded there"), "partition": partition, "owner": owner}),
            );
        };
        let url = format!("{base}{path}");
        match self.ask(&url, headers).await {
            Ok(mut response) => {
                if let Ok(value) = HeaderValue::from_str(&owner) {
                    response.headers_mut().insert(SERVED_BY, value);
                }
                response
            }
            Err(e) => {
                tracing::warn!(partition, %owner, %url, error = %e, "forwarded lookup failed");
                error(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": format!("instance {owner}, which owns partition {partition}, did not answer: {e}"), "partition": partition, "owner": owner, "owner_url": base}),
                )
            }
        }
    }

    /// GETs `url` with the caller's credentials; the owner's answer as it is.
    async fn ask(&self, url: &str, headers: &HeaderMap) -> Result<Response, String> {
        let mut request = Request::get(url).header(FORWARDED_BY, self.instance.as_str());
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {FORWARD_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let (parts, body) = answer.into_parts();
        let body = tokio::time::timeout(FORWARD_TIMEOUT, Limited::new(body, MAX_ANSWER).collect())
            .await
            .map_err(|_| format!("the answer did not complete within {FORWARD_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?
            .to_bytes();
        let mut response = (parts.status, Body::from(body)).into_response();
        for name in [header::CONTENT_TYPE, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
            if let Some(value) = parts.headers.get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        Ok(response)
    }
}
