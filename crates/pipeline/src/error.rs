//! Every way the gateway itself can answer a request with an error, and the one place they become HTTP responses
//! (STYLE §5): a JSON body `{"error": {"code", "message", "request_id"}}` with the right status and headers.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;

/// An error answered by the gateway. `code()` is stable: clients and dashboards key on it.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the request path is invalid: {0}")]
    BadPath(&'static str),
    #[error("no route matches this request")]
    NoRoute,
    #[error("model {model:?} has no version {version:?} to serve ({why})")]
    UnknownVersion { model: String, version: String, why: &'static str },
    #[error("version {version:?} of model {model:?} is not serving: its server's runtime is not verified as one its namespace allows")]
    VersionNotAllowed { model: String, version: String },
    #[error("method not allowed on this route")]
    MethodNotAllowed { allow: HeaderValue },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("the request has {what} beyond the limit of {limit}")]
    HeadersTooLarge { what: &'static str, limit: usize },
    #[error("upstream {upstream:?} has no healthy target")]
    NoHealthyUpstream { upstream: String },
    #[error("upstream {upstream:?} did not answer in time")]
    UpstreamTimeout { upstream: String },
    #[error("upstream {upstream:?} refused the connection")]
    UpstreamRefused { upstream: String },
    #[error("upstream {upstream:?} failed while answering")]
    UpstreamFailed { upstream: String },
    /// The TLS handshake with the target failed (its certificate not trusted, or not for its name).
    #[error("the TLS handshake with upstream {upstream:?} failed; its certificate was not accepted")]
    UpstreamTls { upstream: String },
    #[error("the request body could not be read from the client")]
    ClientBody,
    /// No or bad credentials. `why` is shown to the client and must stay coarse (missing, invalid, expired);
    /// the precise reason goes to the audit log only.
    #[error("{why}")]
    Unauthenticated { why: AuthProblem, challenge: HeaderValue },
    /// A browser without a session on a route with `oidc_session`: sent to sign in (302 to `location`).
    #[error("sign in to continue")]
    SignInRequired { location: HeaderValue },
    #[error("the caller is not allowed to use this route or model")]
    Forbidden,
    #[error("the identity provider's keys could not be obtained; try again shortly")]
    IdentityUnavailable,
    #[error("the audit log cannot take more records; try again shortly")]
    AuditUnavailable,
    #[error("rate limit {limit:?} exceeded; retry after {retry_after} s")]
    RateLimited { limit: String, retry_after: u64 },
    #[error("the rate limit store is unavailable; try again shortly")]
    RateLimitUnavailable,
    #[error("this route counts request bytes: send a Content-Length")]
    LengthRequired,
    #[error("too many requests in flight ({limit:?}); retry shortly")]
    TooManyInFlight { limit: String },
    /// The gateway as a whole is at `server.max_in_flight`: shed before any work.
    #[error("the gateway is overloaded; retry shortly")]
    Overloaded,
    #[error("{0}")]
    InvalidTensor(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request was blocked by the content guard ({reason})")]
    ContentBlocked { reason: String },
    #[error("the upstream's response was blocked by the content guard ({reason})")]
    ResponseBlocked { reason: String },
    #[error("the upstream's response is larger than the limit of {limit} bytes")]
    ResponseTooLarge { limit: u64 },
    /// A compressed request body on a route whose plugins read the body: the gateway would check one reading and
    /// the upstream (which decompresses) run another.
    #[error("this route reads request bodies and takes them uncompressed; send it without Content-Encoding {encoding:?}")]
    UnsupportedEncoding { encoding: String },
}

impl From<crate::oip::BadTensor> for GatewayError {
    fn from(e: crate::oip::BadTensor) -> Self {
        GatewayError::InvalidTensor(e.0)
    }
}

impl From<modelgate_telemetry::audit::Unavailable> for GatewayError {
    fn from(_: modelgate_telemetry::audit::Unavailable) -> Self {
        GatewayError::AuditUnavailable
    }
}

/// What the client is told about rejected credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProblem {
    Missing,
    Invalid,
    Expired,
}

impl std::fmt::Display for AuthProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthProblem::Missing => "credentials are required: send an API key or a bearer token",
            AuthProblem::Invalid => "the credentials were not accepted",
            AuthProblem::Expired => "the credentials have expired",
        })
    }
}

// === impl GatewayError ===

impl GatewayError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadPath(_) => "invalid_path",
            GatewayError::NoRoute => "route_not_found",
            GatewayError::UnknownVersion { .. } => "model_version_not_found",
            GatewayError::VersionNotAllowed { .. } => "model_version_unavailable",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::HeadersTooLarge { .. } => "headers_too_large",
            GatewayError::NoHealthyUpstream { .. } => "no_healthy_upstream",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::UpstreamRefused { .. } => "upstream_refused",
            GatewayError::UpstreamFailed { .. } => "upstream_failed",
            GatewayError::UpstreamTls { .. } => "upstream_tls_failed",
            GatewayError::ClientBody => "client_body_error",
            GatewayError::Unauthenticated { .. } => "unauthenticated",
            GatewayError::SignInRequired { .. } => "sign_in_required",
            GatewayError::Forbidden => "forbidden",
            GatewayError::IdentityUnavailable => "identity_unavailable",
            GatewayError::AuditUnavailable => "audit_unavailable",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::RateLimitUnavailable => "rate_limit_unavailable",
            GatewayError::LengthRequired => "length_required",
            GatewayError::TooManyInFlight { .. } => "concurrency_limited",
            GatewayError::Overloaded => "overloaded",
            GatewayError::InvalidTensor(_) => "invalid_tensor",
            GatewayError::InvalidRequest(_) => "invalid_request",
            GatewayError::ContentBlocked { .. } => "content_blocked",
            GatewayError::ResponseBlocked { .. } => "response_blocked",
            GatewayError::ResponseTooLarge { .. } => "response_too_large",
            GatewayError::UnsupportedEncoding { .. } => "unsupported_encoding",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadPath(_)
            | GatewayError::ClientBody
            | GatewayError::InvalidTensor(_)
            | GatewayError::InvalidRequest(_)
            | GatewayError::ContentBlocked { .. } => StatusCode::BAD_REQUEST,
            GatewayError::ResponseBlocked { .. } | GatewayError::ResponseTooLarge { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::NoRoute | GatewayError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::NoHealthyUpstream { .. } | GatewayError::VersionNotAllowed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamRefused { .. } | GatewayError::UpstreamFailed { .. } | GatewayError::UpstreamTls { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::SignInRequired { .. } => StatusCode::FOUND,
            GatewayError::Forbidden => StatusCode::FORBIDDEN,
            GatewayError::IdentityUnavailable
            | GatewayError::AuditUnavailable
            | GatewayError::RateLimitUnavailable
            | GatewayError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::RateLimited { .. } | GatewayError::TooManyInFlight { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            GatewayError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// Renders the error. The only place a gateway error becomes a response: JSON, or for a gRPC call
    /// (`grpc`) a trailers-only gRPC status whose `grpc-message` starts with the same `code`.
    pub fn into_response(self, request_id: &HeaderValue, grpc: bool) -> Response<Body> {
        let mut resp = if grpc {
            grpc_error(self.status(), self.code(), &self.to_string())
        } else {
            json_error(self.status(), self.code(), &self.to_string(), request_id)
        };
        match &self {
            GatewayError::MethodNotAllowed { allow } => {
                resp.headers_mut().insert(header::ALLOW, allow.clone());
            }
            GatewayError::NoHealthyUpstream { .. }
            | GatewayError::IdentityUnavailable
            | GatewayError::AuditUnavailable
            | GatewayError::RateLimitUnavailable
            | GatewayError::Overloaded
            | GatewayError::TooManyInFlight { .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::RateLimited { retry_after, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            GatewayError::Unauthenticated { challenge, .. } => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge.clone());
            }
            GatewayError::SignInRequired { location } => {
                resp.headers_mut().insert(header::LOCATION, location.clone());
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            _ => {}
        }
        resp
    }
}

use crate::grpc::GRPC_STATUS;
static GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");

/// A trailers-only gRPC response (HTTP 200, `content-type: application/grpc`, no body): `grpc-status` mapped from
/// the HTTP status ([`crate::grpc::status_for`]) and `grpc-message` `"{code}: {message}"`, percent-encoded.
fn grpc_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(GRPC_STATUS.clone(), HeaderValue::from(crate::grpc::status_for(status)));
    let text = crate::grpc::percent_encode(&format!("{code}: {message}"));
    h.insert(GRPC_MESSAGE.clone(), HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("error")));
    resp
}

/// A JSON error response in the one shape all modelgate errors share (also used by the admin API).
pub fn json_error(status: StatusCode, code: &str, message: &str, request_id: &HeaderValue) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "code": code, "message": message, "request_id": request_id.to_str().unwrap_or("") }
    });
    let mut resp = Response::new(Body::full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;

    fn rendered(e: GatewayError) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let resp = e.into_response(&HeaderValue::from_static("req-1"), false);
        let (parts, body) = resp.into_parts();
        let Body::Full(Some(bytes)) = body else { panic!("a gateway error has a full body") };
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn errors_render_as_json_with_code_message_and_request_id() {
        let (status, headers, json) = rendered(GatewayError::NoRoute);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(json["error"]["code"], "route_not_found");
        assert_eq!(json["error"]["message"], "no route matches this request");
        assert_eq!(json["error"]["request_id"], "req-1");
    }

    #[test]
    fn each_error_carries_its_headers() {
        let (status, headers, _) = rendered(GatewayError::RateLimited { limit: "per-second".into(), retry_after: 7 });
        assert_eq!((status, &headers[header::RETRY_AFTER]), (StatusCode::TOO_MANY_REQUESTS, &HeaderValue::from_static("7")));
        let (status, headers, json) = rendered(GatewayError::Unauthenticated {
            why: AuthProblem::Expired,
            challenge: HeaderValue::from_static("Bearer realm=\"modelgate\""),
        });
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer realm=\"modelgate\"");
        assert_eq!(json["error"]["message"], "the credentials have expired", "the client learns only the coarse reason");
        let (status, headers, _) = rendered(GatewayError::MethodNotAllowed { allow: HeaderValue::from_static("GET, POST") });
        assert_eq!((status, &headers[header::ALLOW]), (StatusCode::METHOD_NOT_ALLOWED, &HeaderValue::from_static("GET, POST")));
        for e in [
            GatewayError::NoHealthyUpstream { upstream: "u".into() },
            GatewayError::AuditUnavailable,
            GatewayError::TooManyInFlight { limit: "l".into() },
            GatewayError::Overloaded,
        ] {
            let (status, headers, _) = rendered(e);
            assert!(status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(headers[header::RETRY_AFTER], "1");
        }
    }

    #[test]
    fn grpc_calls_get_trailers_only_statuses_with_the_same_code() {
        let cases = [
            (GatewayError::Unauthenticated { why: AuthProblem::Missing, challenge: HeaderValue::from_static("Bearer") }, "16"),
            (GatewayError::Forbidden, "7"),
            (GatewayError::RateLimited { limit: "l".into(), retry_after: 3 }, "8"),
            (GatewayError::InvalidTensor("input \"x\" is missing".into()), "3"),
            (GatewayError::Overloaded, "14"),
            (GatewayError::UpstreamTimeout { upstream: "u".into() }, "4"),
            (GatewayError::PayloadTooLarge { limit: 9 }, "8"),
        ];
        for (e, grpc_status) in cases {
            let code = e.code();
            let resp = e.into_response(&HeaderValue::from_static("req-1"), true);
            assert_eq!(resp.status(), StatusCode::OK, "{code}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc");
            assert_eq!(resp.headers()["grpc-status"], grpc_status, "{code}");
            assert!(resp.headers()["grpc-message"].to_str().unwrap().starts_with(&format!("{code}: ")), "{code}");
            assert!(resp.body().is_end_stream(), "trailers-only: no message");
        }
        let resp = GatewayError::RateLimited { limit: "l".into(), retry_after: 3 }.into_response(&HeaderValue::from_static("r"), true);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3", "the same headers, as metadata");
    }

    #[test]
    fn statuses_and_codes_are_stable() {
        let cases = [
            (GatewayError::BadPath("x"), 400, "invalid_path"),
            (GatewayError::PayloadTooLarge { limit: 1 }, 413, "payload_too_large"),
            (GatewayError::HeadersTooLarge { what: "headers", limit: 1 }, 431, "headers_too_large"),
            (GatewayError::UpstreamTimeout { upstream: "u".into() }, 504, "upstream_timeout"),
            (GatewayError::UpstreamRefused { upstream: "u".into() }, 502, "upstream_refused"),
            (GatewayError::Forbidden, 403, "forbidden"),
            (GatewayError::LengthRequired, 411, "length_required"),
            (GatewayError::InvalidTensor("t".into()), 400, "invalid_tensor"),
            (GatewayError::ResponseTooLarge { limit: 1 }, 502, "response_too_large"),
            (GatewayError::RateLimitUnavailable, 503, "rate_limit_unavailable"),
            (GatewayError::Overloaded, 503, "overloaded"),
            (GatewayError::UpstreamTls { upstream: "u".into() }, 502, "upstream_tls_failed"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e}");
        }
    }

    #[test]
    fn audit_and_tensor_errors_convert() {
        assert_eq!(GatewayError::from(modelgate_telemetry::audit::Unavailable).code(), "audit_unavailable");
        let e = GatewayError::from(crate::oip::BadTensor("input \"x\" is missing".into()));
        assert_eq!((e.code(), e.to_string()), ("invalid_tensor", "input \"x\" is missing".to_string()));
        assert!(Body::full("x").size_hint().exact() == Some(1));
    }
}
