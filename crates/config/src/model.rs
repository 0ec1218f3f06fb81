//! Validated config types: what the gateway compiles into its runtime snapshot. Built only by [`crate::load`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use crate::raw::{Balance, Protocol};

/// A whole, validated gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub workers: Option<usize>,
    pub shutdown_grace: Duration,
    pub watch: bool,
    pub reload_debounce: Duration,
    pub header_read_timeout: Duration,
    pub upstreams: BTreeMap<String, Arc<UpstreamConfig>>,
    pub routes: Vec<RouteConfig>,
    pub meta: Meta,
}

/// Where a config came from, and how it is shown.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Short SHA-256 of the interpolated config: the version reported by `/admin/config/status`.
    pub hash: String,
    /// Paths to watch for changes: the main file and the include directory.
    pub watch_paths: Vec<PathBuf>,
    /// Each file read (main first) with its text as written, before `${ENV}` interpolation.
    pub sources: Vec<(PathBuf, Arc<str>)>,
}

impl Meta {
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources.iter().map(|(p, _)| p.clone()).collect()
    }
}

/// Where in the files a config item was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// YAML path, e.g. `routes[3]`.
    pub path: String,
}

/// An upstream service.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub protocol: Protocol,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub retry_attempts: u32,
    pub retry_on_status: Vec<u16>,
    pub retry_max_body: u64,
    pub passive: Option<PassiveHealth>,
    pub active: Option<ActiveHealth>,
}

/// One target of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub authority: http::uri::Authority,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealth {
    pub consecutive_failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActiveHealth {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// A route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub origin: Origin,
    pub hosts: Vec<HostMatch>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderMatch>,
    pub upstream: String,
    pub retry_non_idempotent: bool,
    pub plugins: Vec<PluginSpec>,
}

/// Host matcher, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// Path matcher; paths are normalized (no `//`, `.` or `..` segments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Template(String),
    /// Without a trailing slash, except the root `/`.
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    /// `None`: present with any value.
    pub value: Option<HeaderValue>,
}

/// A plugin instance as configured: its name and its settings, parsed by the plugin itself.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub settings: serde_norway::Value,
    /// Location of the settings, e.g. `routes[1].plugins[0].request_size`.
    pub origin: Origin,
}
