//! Helpers shared by the integration tests: the real `modelgate` binary started on port 0 (its ready line read
//! from stdout, no fixed ports, no sleeps), real upstream processes (`modelgate demo-upstream`), and an HTTP
//! client. Every process is killed when its handle drops.

pub mod otlp;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long a process may take to print its ready line.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The `modelgate` binary built alongside the running test.
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/modelgate
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("modelgate");
    assert!(bin.exists(), "{} not built; run the tests with cargo nextest/test from the workspace", bin.display());
    bin
}

/// A running child process that announced itself with a JSON ready line.
pub struct Proc {
    pub child: Child,
    pub ready: serde_json::Value,
}

impl Proc {
    /// Spawns `modelgate ARGS` and waits for its ready line on stdout.
    pub async fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::spawn_command(cmd, args).await
    }

    /// Spawns any command that prints a JSON `{"event":"ready",…}` line on stdout, and waits for that line.
    pub async fn spawn_command(cmd: Command, args: &[&str]) -> Proc {
        Self::try_spawn_command(cmd, args, START_DEADLINE).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Proc::spawn_command`] with its own deadline, reporting failure instead of panicking.
    pub async fn try_spawn_command(cmd: Command, args: &[&str], deadline: Duration) -> Result<Proc, String> {
        let ready = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok().filter(|v| v["event"] == "ready");
        Self::spawn_waiting(cmd, &format!("{args:?}"), deadline, ready).await
    }

    /// Spawns a command and waits until a stdout line contains `marker`, ignoring case (for programs without a JSON
    /// ready line).
    pub async fn spawn_until(cmd: Command, marker: &str) -> Proc {
        let marker = marker.to_ascii_lowercase();
        Self::spawn_waiting(cmd, &marker.clone(), START_DEADLINE, move |line: &str| {
            line.to_ascii_lowercase().contains(&marker).then_some(serde_json::Value::Null)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Spawns `cmd` and reads its stdout until `ready` accepts a line (whose value becomes `Proc::ready`).
    async fn spawn_waiting(
        mut cmd: Command,
        what: &str,
        deadline: Duration,
        ready: impl Fn(&str) -> Option<serde_json::Value>,
    ) -> Result<Proc, String> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null()).kill_on_drop(true);
        let program = cmd.as_std().get_program().to_owned();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let found = tokio::time::timeout(deadline, async {
            let mut line = String::new();
            loop {
                line.clear();
                if stdout.read_line(&mut line).await.expect("read stdout") == 0 {
                    return None;
                }
                if let Some(v) = ready(&line) {
                    return Some(v);
                }
            }
        })
        .await;
        match found {
            Ok(Some(ready)) => {
                drain(stdout);
                Ok(Proc { child, ready })
            }
            Ok(None) => {
                let status = child.wait().await.expect("wait");
                Err(format!("{program:?} {what} exited before ready: {status}"))
            }
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("{program:?} {what} did not become ready in {deadline:?}"))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("child still running")
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Peak resident set size in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

/// Keeps reading a child's stdout after its ready line, so a chatty child never blocks on a full pipe.
fn drain(mut stdout: BufReader<ChildStdout>) {
    tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut stdout, &mut sink).await;
    });
}

/// A gateway process with its config in a temporary directory.
pub struct Gateway {
    pub proc: Proc,
    pub addr: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Gateway {
    /// Writes `yaml` to `gateway.yaml` in a fresh directory and starts `modelgate gateway` on it.
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with(yaml, &[], &[]).await
    }

    /// Like [`Gateway::start`], with extra files (relative path, content), extra args and environment.
    pub async fn start_with(yaml: &str, files: &[(&str, &str)], envs: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, yaml).expect("write config");
        for (rel, content) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, content).expect("write file");
        }
        let proc = Proc::spawn(&["gateway", "--config", config.to_str().expect("utf-8 path"), "--workers", "2"], envs).await;
        let addr = proc.ready["gateway"].as_str().expect("gateway addr").to_string();
        let admin = proc.ready["admin"].as_str().expect("admin addr").to_string();
        Gateway { proc, addr, admin, dir, config }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Replaces the config file's content.
    /// Replaces the config file by rename, so the gateway's watcher never reads it half written (the
    /// truncate-then-write case is tested on its own in reload.rs).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.config.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("replace config");
    }

    /// `POST /admin/reload`.
    pub async fn reload(&self) -> Resp {
        send(Method::POST, &self.admin_url("/admin/reload"), &[], Bytes::new()).await
    }

    /// The active config version from `/admin/config/status`.
    pub async fn version(&self) -> String {
        get(&self.admin_url("/admin/config/status")).await.json()["version"].as_str().expect("version").to_string()
    }
}

/// A model server process (`modelgate serve`).
pub struct ModelServer {
    pub proc: Proc,
    pub addr: String,
    pub grpc: String,
}

impl ModelServer {
    pub async fn start(repository: &Path) -> ModelServer {
        Self::start_with(repository, &[], &[]).await
    }

    /// [`ModelServer::start`] with extra arguments and environment.
    pub async fn start_with(repository: &Path, extra: &[&str], envs: &[(&str, &str)]) -> ModelServer {
        let mut args = vec![
            "serve",
            "--model-repository",
            repository.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, envs).await;
        let addr = proc.ready["http"].as_str().expect("http addr").to_string();
        let grpc = proc.ready["grpc"].as_str().expect("grpc addr").to_string();
        ModelServer { proc, addr, grpc }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// The repository's root directory (for bundled examples).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A demo upstream process (`modelgate demo-upstream`).
pub struct Upstream {
    pub proc: Proc,
    pub addr: String,
    pub name: String,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, "127.0.0.1:0").await
    }

    /// Starts on a given address (to bring a stopped upstream back on its port).
    pub async fn start_on(name: &str, listen: &str) -> Upstream {
        Self::spawn(&["demo-upstream", "--name", name, "--listen", listen], name).await
    }

    /// Starts an upstream that answers every request with `status` (but `/healthz`, `/count`).
    pub async fn failing(name: &str, status: u16) -> Upstream {
        Self::spawn(&["demo-upstream", "--name", name, "--status", &status.to_string()], name).await
    }

    async fn spawn(args: &[&str], name: &str) -> Upstream {
        let proc = Proc::spawn(args, &[]).await;
        let addr = proc.ready["addr"].as_str().expect("addr").to_string();
        Upstream { proc, addr, name: name.to_string() }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served so far (excluding `/count` itself).
    pub async fn count(&self) -> u64 {
        get(&format!("{}/count", self.url())).await.json()["requests"].as_u64().expect("count")
    }

    /// Kills the process and waits for it to exit, so its port refuses connections.
    pub async fn stop(mut self) -> String {
        self.proc.child.kill().await.expect("kill upstream");
        self.addr
    }
}

/// An address that refuses connections for as long as the returned socket lives: the port is bound but not
/// listening, so no other test process can take it over (a stopped server's port could be reused at any time).
pub fn refusing_addr() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = socket.local_addr().expect("local addr").to_string();
    (socket, addr)
}

/// A response read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a modelgate JSON error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.body));
        let j = self.json();
        assert_eq!(j["error"]["code"], code, "{j}");
        assert!(j["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn get(url: &str) -> Resp {
    send(Method::GET, url, &[], Bytes::new()).await
}

pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
    try_send(&client(), method, url, headers, body.into()).await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Sends one request on `client`; errors are transport errors.
pub async fn try_send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, Box<dyn std::error::Error + Send + Sync>> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(body))?).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Resp { status: parts.status, headers: parts.headers, body })
}

/// The names of process `pid`'s threads (Linux `/proc/PID/task/*/comm`, at most 15 bytes each).
pub fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).map(|c| c.trim().to_string()).collect()
        })
        .unwrap_or_default()
}

/// Polls `check` until it returns true or `deadline` passes (for state changed by another process).
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        #[allow(clippy::disallowed_methods, reason = "the pause between two polls of a condition, under a deadline")]
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real OpenID Connect provider (node `oidc-provider`, `tests/idp/idp.mjs`; `scripts/test` installs it) on a
/// port the OS picks, issuing JWT access tokens with the client-credentials grant.
pub struct Idp {
    pub proc: Proc,
    pub issuer: String,
}

impl Idp {
    pub async fn start() -> Idp {
        let dir = repo_root().join("tests/idp");
        assert!(dir.join("node_modules/oidc-provider").exists(), "run ./scripts/test (it installs tests/idp's npm packages)");
        // A node process has been seen (twice in many runs, under a parallel build) to stall before loading its
        // modules; a stalled start is killed and retried, and the retry is reported.
        let mut tries = Vec::new();
        let proc = loop {
            let mut cmd = Command::new("node");
            cmd.arg("idp.mjs").current_dir(&dir);
            match Proc::try_spawn_command(cmd, &["idp.mjs"], Duration::from_secs(10)).await {
                Ok(p) => break p,
                Err(e) if tries.len() < 2 => {
                    eprintln!("test-support: retrying the IdP start: {e}");
                    tries.push(e);
                }
                Err(e) => panic!("the IdP did not start: {tries:?} then {e}"),
            }
        };
        let issuer = proc.ready["issuer"].as_str().expect("issuer").to_string();
        Idp { proc, issuer }
    }

    /// A client-credentials access token for `client` (secret `<client>-secret-0123456789`) for `resource`
    /// (the token's audience; `urn:modelgate` is RS256-signed, `urn:modelgate:es` ES256).
    pub async fn token(&self, client: &str, scope: &str, resource: &str) -> String {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client}:{client}-secret-0123456789"));
        let body = format!("grant_type=client_credentials&scope={}&resource={}", scope.replace(' ', "%20"), resource.replace(':', "%3A"));
        let r = send(
            Method::POST,
            &format!("{}/token", self.issuer),
            &[("authorization", &format!("Basic {basic}")), ("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "token endpoint: {}", String::from_utf8_lossy(&r.body));
        r.json()["access_token"].as_str().expect("access_token").to_string()
    }

    /// A token signed with the IdP's current RSA key, with `claims` over sound defaults (test-only endpoint).
    pub async fn sign(&self, claims: serde_json::Value) -> String {
        let body = serde_json::json!({ "claims": claims }).to_string();
        let r = send(Method::POST, &format!("{}/test/sign", self.issuer), &[("content-type", "application/json")], body).await;
        r.json()["token"].as_str().expect("token").to_string()
    }

    /// An attack token (test-only endpoint): `none`, `hs256-pubkey`, `rogue-kid`, `jku`, `x5u`, `wrong-key-same-kid`.
    pub async fn forge(&self, kind: &str) -> String {
        get(&format!("{}/test/forge?kind={kind}", self.issuer)).await.json()["token"].as_str().expect("token").to_string()
    }

    /// Publishes a new signing key first and keeps the old one (test-only endpoint).
    pub async fn rotate(&self) {
        assert_eq!(send(Method::POST, &format!("{}/test/rotate", self.issuer), &[], Bytes::new()).await.status, 200);
    }

    /// Stops the IdP; its port then refuses connections.
    pub async fn stop(&mut self) {
        self.proc.child.kill().await.expect("kill idp");
    }
}

/// A STAND-IN for AWS STS (`tests/idp/sts-standin.mjs`): verifies SigV4 presigned `GetCallerIdentity` requests
/// against fixed test credentials and answers with STS's XML. Credentials (access key id → ARN):
/// `AKIATESTALICE0000001` → `arn:aws:iam::111122223333:user/alice`, `ASIATESTTEAMA0000001` →
/// `arn:aws:sts::111122223333:assumed-role/ml-team-a/session-1`, `AKIATESTMALLORY00001` →
/// `arn:aws:iam::999999999999:user/mallory`.
pub struct StsStandIn {
    pub proc: Proc,
    pub endpoint: String,
}

impl StsStandIn {
    pub async fn start() -> StsStandIn {
        let mut cmd = Command::new("node");
        cmd.arg("sts-standin.mjs").current_dir(repo_root().join("tests/idp"));
        let proc = Proc::spawn_command(cmd, &["sts-standin.mjs"]).await;
        let endpoint = proc.ready["endpoint"].as_str().expect("endpoint").to_string();
        StsStandIn { proc, endpoint }
    }

    /// The secret the stand-in knows for a test access key id.
    pub fn secret(access_key: &str) -> &'static str {
        match access_key {
            "AKIATESTALICE0000001" => "alice-secret-key",
            "ASIATESTTEAMA0000001" => "team-a-secret-key",
            "AKIATESTMALLORY00001" => "mallory-secret-key",
            _ => "unknown",
        }
    }

    /// How many GetCallerIdentity calls the stand-in answered.
    pub async fn calls(&self) -> u64 {
        get(&format!("{}/test/calls", self.endpoint)).await.json()["calls"].as_u64().expect("calls")
    }

    /// Every later call answers 503.
    pub async fn fail(&self) {
        self.switch("fail").await;
    }

    /// `fail` (503s), `throttle` (400 `Throttling`, as STS throttles) or `slow` (every answer 300 ms late).
    pub async fn switch(&self, what: &str) {
        assert_eq!(send(Method::POST, &format!("{}/test/{what}", self.endpoint), &[], Bytes::new()).await.status, 200);
    }
}

/// An aws-iam-authenticator style token: `k8s-aws-v1.` + base64url of a SigV4-presigned `GetCallerIdentity` URL for
/// `endpoint` (`scheme://host:port`), signed at `signed_at` for `expires` seconds with the signed headers `host`
/// and, given a `cluster_id`, `x-k8s-aws-id`. Presigned by AWS's own `aws-sigv4` crate, so the STS stand-in's
/// verifier (written here from the spec) is checked against an implementation that is not ours.
pub fn aws_iam_token(
    endpoint: &str,
    access_key: &str,
    secret: &str,
    cluster_id: Option<&str>,
    signed_at: std::time::SystemTime,
    expires: u64,
) -> String {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
    use base64::Engine;
    let identity = aws_credential_types::Credentials::new(access_key, secret, None, None, "modelgate-test").into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(expires));
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("sts")
        .time(signed_at)
        .settings(settings)
        .build()
        .expect("signing parameters")
        .into();
    let url = format!("{endpoint}/?Action=GetCallerIdentity&Version=2011-06-15");
    let headers: Vec<(&str, &str)> = cluster_id.map(|c| ("x-k8s-aws-id", c)).into_iter().collect();
    let signable = SignableRequest::new("GET", &url, headers.iter().copied(), SignableBody::Bytes(&[])).expect("a signable request");
    let (instructions, _) = sign(signable, &params).expect("SigV4 presign").into_parts();
    let mut req = http::Request::get(&url).body(()).expect("a request");
    instructions.apply_to_request_http1x(&mut req);
    format!("k8s-aws-v1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(req.uri().to_string()))
}

/// A real `redis-server` (apt `redis-server`; `scripts/test` installs it) on a unix socket in a temporary
/// directory: no TCP port at all, no persistence.
pub struct RedisServer {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    /// `unix://…/redis.sock`
    pub url: String,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc = Self::spawn(dir.path()).await;
        RedisServer { proc, url: format!("unix://{}", dir.path().join("redis.sock").display()), dir }
    }

    async fn spawn(dir: &Path) -> Proc {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", "0", "--unixsocket"]).arg(dir.join("redis.sock")).args([
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "",
        ]);
        Proc::spawn_until(cmd, "Ready to accept connections").await
    }

    /// Starts a fresh (empty) server on the same socket after [`RedisServer::kill`].
    pub async fn restart(&mut self) {
        self.proc = Self::spawn(self.dir.path()).await;
    }

    /// Runs one command with `redis-cli`, returning its output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let sock = self.dir.path().join("redis.sock");
        let out = Command::new("redis-cli").arg("-s").arg(&sock).args(args).output().await.expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Kills the server (`SIGKILL`): connections drop at once.
    pub async fn kill(&mut self) {
        self.proc.child.kill().await.expect("kill redis");
    }
}

/// Runs `modelgate keys create --file FILE --consumer CONSUMER EXTRA…` and returns the key it printed.
pub async fn create_key(file: &Path, consumer: &str, extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", "--file", file.to_str().expect("utf-8 path"), "--consumer", consumer];
    args.extend_from_slice(extra);
    let out = Command::new(bin()).args(&args).output().await.expect("run modelgate keys create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    assert!(key.starts_with("mg_"), "{key}");
    key
}

/// The value of one series (name with labels, exactly as exposed) in a gateway's admin `/metrics`; 0 if absent.
pub async fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = String::from_utf8(get(&gw.admin_url("/metrics")).await.body.to_vec()).expect("utf-8");
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
}
