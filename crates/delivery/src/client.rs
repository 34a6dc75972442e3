//! One HTTP attempt: the signed POST, and what came of it as the retry
//! policy sees it ([`AttemptResult`]) plus what the attempt history records.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::AttemptResult;
use domain::retry::parse_retry_after;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use url::Url;

use crate::error::Error;
use crate::sign::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, signature_header};
use crate::ssrf::{AddressPolicy, GuardedResolver, check_url, find_refusal};

/// How much of an error response's body is kept in `last_error`.
const ERROR_BODY_CHARS: usize = 200;

/// The pooled HTTP client of the dispatcher, with the address guard.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: AddressPolicy,
}

/// One signed webhook to send.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Target.
    pub url: &'a Url,
    /// `webhook-id`.
    pub id: &'a str,
    /// The JSON body.
    pub body: &'a [u8],
    /// The bot's HMAC keys (every active secret signs).
    pub keys: &'a [Vec<u8>],
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// For the retry policy.
    pub result: AttemptResult,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// Time to the response or failure.
    pub latency: Duration,
    /// The status, if the endpoint answered.
    pub status_code: Option<u16>,
    /// What went wrong (`None` for a 2xx).
    pub error: Option<String>,
}

impl WebhookClient {
    /// A client with `timeout` per attempt (connect to end of body), no
    /// redirects (a 3xx is final), no proxy (a proxy would resolve names
    /// behind the guard's back), and the guard as its resolver. `hosts`
    /// answers names without DNS (tests).
    pub fn new(
        timeout: Duration,
        policy: AddressPolicy,
        hosts: HashMap<String, Vec<IpAddr>>,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60))
            .dns_resolver(Arc::new(GuardedResolver::new(policy, hosts)))
            .build()
            .map_err(Error::Client)?;
        Ok(Self { http, policy })
    }

    /// Posts one webhook, signed at this moment, and reports the outcome.
    /// Never fails: every failure is an outcome.
    pub async fn send(&self, request: Request<'_>) -> Outcome {
        let at = Utc::now();
        let started = Instant::now();
        if let Err(refused) = check_url(request.url, self.policy) {
            return Outcome {
                result: AttemptResult::Refused,
                at,
                latency: started.elapsed(),
                status_code: None,
                error: Some(refused.to_string()),
            };
        }
        let timestamp = at.timestamp();
        let signature = signature_header(request.keys, request.id, timestamp, request.body);
        let sent = self
            .http
            .post(request.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("escalations-webhooks/1"))
            .header(HEADER_ID, request.id)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(request.body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                // Never the URL: its query string is often a secret.
                let (result, message) = describe_error(&error.without_url());
                return Outcome {
                    result,
                    at,
                    latency: started.elapsed(),
                    status_code: None,
                    error: Some(message),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, Utc::now()));
        // Reading the body lets the connection go back to the pool; only the
        // start of an error body is kept.
        let body = read_prefix(response).await;
        let latency = started.elapsed();
        let code = status.as_u16();
        let error = (!status.is_success()).then(|| {
            let reason = status.canonical_reason().unwrap_or("");
            match body.trim() {
                "" => format!("HTTP {code} {reason}").trim_end().to_owned(),
                text => format!("HTTP {code} {reason}: {text}"),
            }
        });
        Outcome {
            result: AttemptResult::Status { code, retry_after },
            at,
            latency,
            status_code: Some(code),
            error,
        }
    }
}

/// Up to [`ERROR_BODY_CHARS`] characters of the body; the rest is read and
/// dropped (bounded by the client's timeout).
async fn read_prefix(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if kept.len() < ERROR_BODY_CHARS * 4 {
            kept.extend_from_slice(&chunk);
        }
    }
    String::from_utf8_lossy(&kept).chars().take(ERROR_BODY_CHARS).collect()
}

/// Classifies a transport error: the guard's refusal, a timeout, or a
/// connection problem (DNS, refused, reset, TLS).
fn describe_error(error: &reqwest::Error) -> (AttemptResult, String) {
    if let Some(refused) = find_refusal(error) {
        return (AttemptResult::Refused, refused.to_string());
    }
    if error.is_timeout() {
        return (AttemptResult::Timeout, "timed out".to_owned());
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    (AttemptResult::ConnectError, message)
}
