//! Fetching discovery documents, JWKS and STS answers over HTTP(S) (rustls, Mozilla's roots). Small, bounded, with a timeout.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 1 << 20;

fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        Client::builder(TokioExecutor::new()).build(https)
    })
}

/// GETs `url` and parses its JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, String> {
    let (status, body) = get(url, &[("accept", "application/json")]).await?;
    if !status.is_success() {
        return Err(format!("{url}: status {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not the expected JSON: {e}"))
}

/// GETs `url` with `headers`: the status and the body, whatever the status.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<(http::StatusCode, Bytes), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let mut req = http::Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client().request(req)).await.map_err(|_| format!("{url}: timed out"))?.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = tokio::time::timeout(TIMEOUT, Limited::new(resp.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| format!("{url}: timed out reading the body"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, body))
}
