//! Fetching discovery documents, JWKS and STS answers over HTTP(S) (rustls, Mozilla's roots). Small, bounded, with a timeout.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;
type PostClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 1 << 20;

fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        Client::builder(TokioExecutor::new()).build(https)
    })
}

fn post_client() -> &'static PostClient {
    static CLIENT: OnceLock<PostClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        Client::builder(TokioExecutor::new()).build(https)
    })
}

/// Why a fetch failed; every variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bad URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url}: timed out")]
    Timeout { url: String },
    #[error("{url}: {reason}")]
    Failed { url: String, reason: String },
    #[error("{url}: status {status}")]
    Status { url: String, status: http::StatusCode },
    #[error("{url}: not the expected JSON: {source}")]
    NotJson { url: String, source: serde_json::Error },
}

impl FetchError {
    /// The URL the error is about.
    pub fn url(&self) -> &str {
        match self {
            FetchError::BadUrl { url, .. }
            | FetchError::Timeout { url }
            | FetchError::Failed { url, .. }
            | FetchError::Status { url, .. }
            | FetchError::NotJson { url, .. } => url,
        }
    }

    /// The message with the URL's query string cut off: it may carry credentials (a presigned STS request).
    pub fn without_query(&self) -> String {
        let msg = self.to_string();
        match self.url().split_once('?') {
            Some((base, _)) => msg.replace(self.url(), &format!("{base}?…")),
            None => msg,
        }
    }
}

/// GETs `url` and parses its JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, FetchError> {
    let (status, body) = get(url, &[("accept", "application/json")]).await?;
    if !status.is_success() {
        return Err(FetchError::Status { url: url.into(), status });
    }
    serde_json::from_slice(&body).map_err(|source| FetchError::NotJson { url: url.into(), source })
}

/// GETs `url` with `headers`: the status and the body, whatever the status.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<(http::StatusCode, Bytes), FetchError> {
    let failed = |reason: String| FetchError::Failed { url: url.into(), reason };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| FetchError::BadUrl { url: url.into(), reason: e.to_string() })?;
    let mut req = http::Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).map_err(|e| failed(e.to_string()))?;
    answer(url, client().request(req)).await
}

/// Waits for a response and reads its (bounded) body, each within [`TIMEOUT`].
async fn answer(
    url: &str,
    sent: impl std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>>,
) -> Result<(http::StatusCode, Bytes), FetchError> {
    let failed = |reason: String| FetchError::Failed { url: url.into(), reason };
    let timeout = || FetchError::Timeout { url: url.into() };
    let resp = tokio::time::timeout(TIMEOUT, sent).await.map_err(|_| timeout())?.map_err(|e| failed(e.to_string()))?;
    let status = resp.status();
    let body = tokio::time::timeout(TIMEOUT, Limited::new(resp.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| timeout())?
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

/// POSTs an `application/x-www-form-urlencoded` body (an OAuth token request) with `headers`: the status and the
/// body, whatever the status.
pub async fn post_form(url: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Result<(http::StatusCode, Bytes), FetchError> {
    let failed = |reason: String| FetchError::Failed { url: url.into(), reason };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| FetchError::BadUrl { url: url.into(), reason: e.to_string() })?;
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut req = http::Request::post(uri).header("content-type", "application/x-www-form-urlencoded").header("accept", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| failed(e.to_string()))?;
    answer(url, post_client().request(req)).await
}
