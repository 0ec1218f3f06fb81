//! The `modelgate` command line. Only argument handling lives here; the work is in the library crates.

#![deny(unsafe_code)]

mod alloc;

mod demo;
mod kong;
mod load;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use modelgate_config::{Source, Vars};
use modelgate_gateway::{Gateway, Options};

/// `modelgate --version`: the version, the git commit built (see build.rs) and the runtimes built in.
const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MODELGATE_GIT_COMMIT"), "; runtimes: onnxruntime (found at run time), tract)");

/// The identity-aware front door for PyTorch model services.
#[derive(Parser)]
#[command(name = "modelgate", version = VERSION, about)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=modelgate_gateway=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway with a config file.
    Gateway {
        /// The gateway config (YAML).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run as an external authorizer for the proxies teams already run (nginx `auth_request`, Traefik
    /// `forwardAuth`): the same config, phases, audit and admin API as `gateway`, but each request on the listener is
    /// a check — answered 200 with the identity headers for the upstream, or with the refusal — and nothing is
    /// forwarded (docs/authz.md).
    Authz {
        /// The gateway config (YAML).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Check a config file: exit 0 if valid, else print every error with its file, YAML path and a hint; exit 1.
    Validate {
        /// The gateway config (YAML).
        file: PathBuf,
        /// `text` (one line per problem) or `json` (one document: `ok`, `errors`, `warnings`, each with `file`,
        /// `path`, `message`, `hint`), for CI.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
        /// Check it as `modelgate authz` loads it (routes may leave out `upstream`), not as `modelgate gateway`.
        #[arg(long)]
        authz: bool,
    },
    /// Print a shell completion script: `modelgate completions bash > /etc/bash_completion.d/modelgate` (or zsh,
    /// fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `modelgate man | man -l -`.
    Man,
    /// Ask a health endpoint: exit 0 when it answers 2xx within 3 s, else 1 — for a container `HEALTHCHECK` in an
    /// image without curl.
    Probe {
        /// The URL (plain http).
        #[arg(env = "MODELGATE_HEALTH_URL", default_value = "http://127.0.0.1:8000/v2/health/ready")]
        url: String,
    },
    /// Print the JSON Schema of the gateway config (also in docs/config.schema.json), for editors and CI.
    Schema,
    /// Show what a route of a config does: its match, upstream and targets, and every plugin in effect with where
    /// it was configured (the route, its upstream, a plugin set or the top-level defaults).
    Explain {
        /// The gateway config (YAML).
        #[arg(long)]
        config: PathBuf,
        /// The route's name.
        route: String,
        /// `text`, or `json` (one document: `route`, `from`, `match`, `upstream`, `targets`, `plugins` with `name`
        /// and `from`), for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Serve a model repository (`DIR/<model>/<version>/model.onnx`) over the Open Inference Protocol v2.
    Serve {
        /// The model repository directory.
        #[arg(long)]
        model_repository: PathBuf,
        /// Serve the repository directory itself as this one model: its numbered version directories, or a
        /// `model.onnx` directly inside as version 1 — KServe's layout, where the storage initializer fills
        /// `/mnt/models` and the runtime is started with `--model-name {{.Name}}`.
        #[arg(long)]
        model_name: Option<String>,
        /// HTTP address (OIP v2 REST).
        #[arg(long, default_value = "0.0.0.0:8000")]
        listen: SocketAddr,
        /// gRPC address (OIP v2 `inference.GRPCInferenceService`). Default: the REST listener's host, on its port
        /// + 1 (port 0 when the REST port is 0), so `--listen 127.0.0.1:8000` never opens gRPC beyond loopback.
        #[arg(long)]
        grpc_listen: Option<SocketAddr>,
        /// Write the bound address as one JSON line to this file once listening (also printed on stdout).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Export OpenTelemetry spans (queue wait, inference) to this OTLP collector, e.g. http://localhost:4317.
        /// Headers for the collector (credentials) come from OTEL_EXPORTER_OTLP_HEADERS.
        #[arg(long)]
        otlp_endpoint: Option<String>,
        /// `grpc` or `http` (OTLP/HTTP protobuf; `/v1/traces` is added to an endpoint without a path).
        #[arg(long, default_value = "grpc")]
        otlp_protocol: String,
        /// Fraction of new traces sampled; requests with a `traceparent` follow its sampled flag.
        #[arg(long, default_value_t = 0.01)]
        trace_sample_ratio: f64,
        /// onnxruntime's shared library (`libonnxruntime.so*`); default: ORT_DYLIB_PATH, then the `onnxruntime`
        /// package of the python3 on PATH, then the library directories (`modelgate doctor` shows the search).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// Serve REST and gRPC over TLS with this PEM certificate chain (leaf first); needs `--tls-key`. Read at
        /// start (restart to rotate).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert`.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Print what the model server would run with here and why: cores, where onnxruntime was looked for and found,
    /// and each model's runtime, threads, instances and batching. Loads no model.
    Doctor {
        /// The model repository to explain (optional).
        #[arg(long)]
        model_repository: Option<PathBuf>,
        /// As `serve --ort-lib`.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// `text` or `json` (one document: cores, onnxruntime with every place looked at, models with their plans).
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Run the gateway with the embedded example config in front of the model server and the bundled digits model.
    Up {
        /// Gateway address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        /// Model repository to serve instead of the bundled digits model.
        #[arg(long)]
        model_repository: Option<PathBuf>,
        /// As `serve --ort-lib`.
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// Keep the dev key file and the audit log in this directory, and keep it on exit. Default: a fresh
        /// temporary directory, printed at start and removed on exit.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Serve the gateway over HTTPS with this PEM certificate chain (leaf first); needs `--tls-key`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert`.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Manage API keys: create (shown once), list, revoke. The gateway reloads the key file when it changes.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Show or steer a model's progressive rollout through the gateway's admin API (docs/versions.md).
    Rollout {
        /// `status`, or an action: `promote`, `pause`, `resume`, `rollback`, `restart`.
        #[arg(value_parser = ["status", "promote", "pause", "resume", "rollback", "restart"])]
        action: String,
        /// The model (as named under `models`).
        model: String,
        /// The gateway's admin address.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        admin: String,
        /// An admin credential (API key or token), when `admin.consumers`/`admin.groups` is set. The
        /// `MODELGATE_ADMIN_TOKEN` environment variable keeps it out of the process list.
        #[arg(long, env = "MODELGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Replace a namespace's upstreams, routes and models with FILE's (YAML: `upstreams`, `routes`, `models`) through the gateway's
    /// namespace API, as its owner (docs/self-service.md); prints the diff and every refusal with its rule.
    Apply {
        /// The namespace.
        #[arg(short = 'n', long)]
        namespace: String,
        /// The namespace's file: `upstreams`, `routes` and `models`, as in an include file.
        file: PathBuf,
        /// Check and show the diff; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        owner: OwnerArgs,
    },
    /// Remove one route, upstream, model or model version of a namespace through the namespace API, as its owner.
    Delete {
        /// The namespace.
        #[arg(short = 'n', long)]
        namespace: String,
        /// `route`, `upstream`, `model` or `version`.
        #[arg(value_parser = ["route", "upstream", "model", "version"])]
        kind: String,
        /// Its name; a version is `MODEL/VERSION`.
        name: String,
        /// Check and show the diff; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        owner: OwnerArgs,
    },
    /// Convert another gateway's config to modelgate's.
    Import {
        #[command(subcommand)]
        cmd: ImportCmd,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Runs a model in-process in a loop at a fixed batch size and prints inferences per second (the benchmark's
    /// physical limit for the runtime).
    #[command(hide = true)]
    BenchRuntime {
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// Rows per execution (the first dimension).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// How long to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// `tract` or `onnxruntime` (its library found as `serve` finds it).
        #[arg(long, default_value = "tract")]
        backend: String,
        /// Size of the other dynamic dimensions (e.g. a transformer's sequence length).
        #[arg(long, default_value_t = 1)]
        dynamic_dim: usize,
        /// Threads per run: onnxruntime intra-op, tract's matmul pool (default: as served, the cores this process may
        /// use).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Sends GETs at a constant rate on keep-alive connections and prints latency percentiles measured from when
    /// each request was due (bench/chain.sh's added-latency figure).
    #[command(hide = true)]
    BenchLoad {
        /// The URL to GET (`http://host:port/path`).
        url: http::Uri,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// How long to send.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Extra request headers, `name: value`.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// A demo HTTP service (used by `up` and by the tests as a real upstream process).
    #[command(hide = true)]
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Name reported in every answer, to tell targets apart.
        #[arg(long, default_value = "demo")]
        name: String,
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Answer every request (but /healthz and /count) with this status.
        #[arg(long)]
        status: Option<u16>,
    },
}

/// Where the namespace API is and whose credential calls it.
#[derive(clap::Args)]
struct OwnerArgs {
    /// The gateway's admin address.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    admin: String,
    /// The owner's credential (API key or token); `MODELGATE_TOKEN` keeps it out of the process list.
    #[arg(long, env = "MODELGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key for a consumer and print it (once: only its hash is stored).
    Create {
        /// The key file (`identity.api_keys.file`); created if missing.
        #[arg(long)]
        file: PathBuf,
        /// The consumer the key authenticates as.
        #[arg(long)]
        consumer: String,
        /// Lifetime, e.g. `30d`, `12h`; default: no expiry.
        #[arg(long)]
        expires: Option<modelgate_config::HumanDuration>,
        /// Scopes granted, comma-separated.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Groups of the consumer, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Register key values callers already use (e.g. Kong `key-auth` credentials), read from standard input one per
    /// line, for a consumer; only their hashes are stored, and each gets an id for `list` and `revoke`. Keys of 20
    /// to 512 printable characters; clients keep sending them as they did (name Kong's `apikey` header in
    /// `identity.api_keys.header`).
    Import {
        /// The key file (`identity.api_keys.file`); created if missing.
        #[arg(long)]
        file: PathBuf,
        /// The consumer the keys authenticate as.
        #[arg(long)]
        consumer: String,
        /// Scopes granted, comma-separated.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Groups of the consumer, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// List the keys (ids, consumers, expiry, revocation; never secrets).
    List {
        #[arg(long)]
        file: PathBuf,
        /// `text` (a table) or `json` (one object per key and line: id, consumer, scopes, groups, created,
        /// expires, revoked, imported).
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Revoke a key by id; takes effect at the gateway's next reload (the file is watched).
    Revoke {
        #[arg(long)]
        file: PathBuf,
        /// The key id (the 12 hex digits after `mg_`).
        id: String,
        /// Also publish the revocation through this Redis (`redis.url` of the gateways' config), so gateways
        /// with `identity.api_keys.redis_revocations` refuse the key at once.
        #[arg(long, value_name = "URL")]
        redis: Option<String>,
        /// The gateways' `redis.key_prefix`.
        #[arg(long, default_value = "modelgate:")]
        redis_prefix: String,
    },
    /// Create the gateway's P-256 signing key for identity assertions (`identity.assertion.signing_key`);
    /// prints its key id.
    SigningKey {
        /// Where to write the key (PKCS#8 PEM, mode 0600); must not exist.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain of audit log files, given oldest first (`audit.log.* audit.log`). Exit 1 at the first
    /// broken, altered or missing line, naming it.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Write the bound addresses as one JSON line to this file once listening (also printed on stdout).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Worker threads (overrides `server.workers`); 1 runs a single-threaded runtime.
    #[arg(long)]
    workers: Option<usize>,
    /// Answer checks instead of forwarding (`modelgate authz`).
    #[arg(skip)]
    authz: bool,
}

#[derive(Subcommand)]
enum ImportCmd {
    /// A Kong declarative config (decK, `_format_version` 3.0; 2.x and 1.1 read as Kong 3 migrates them): writes
    /// `OUTPUT/gateway.yaml`, `OUTPUT/keys.yaml` (key-auth credentials, hashed) and `OUTPUT/import-report.json`
    /// (every entity, field or plugin not converted, with its JSON path and the reason).
    Kong {
        /// The Kong file (YAML or JSON); `${{ env "DECK_NAME" }}` references are read from the environment.
        file: PathBuf,
        /// The directory to write.
        #[arg(long)]
        output: PathBuf,
        /// Exit 1 when anything was not converted.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `modelgate rollout ACTION MODEL`: one admin API call, its JSON answer printed; exit 1 when refused.
fn rollout(action: &str, model: &str, admin: &str, token: Option<&str>) -> anyhow::Result<ExitCode> {
    match action {
        "status" => admin_call(http::Method::GET, admin, &format!("/admin/models/{model}/rollout"), token, Vec::new()),
        a => admin_call(http::Method::POST, admin, &format!("/admin/models/{model}/rollout/{a}"), token, Vec::new()),
    }
}

/// One call to the gateway's admin API at `admin` (`http://host:port`), its JSON answer printed (a diff it holds
/// printed as text after it); exit 1 when refused.
fn probe(url: &str) -> anyhow::Result<ExitCode> {
    let uri: http::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    anyhow::ensure!(uri.scheme_str() == Some("http"), "{url}: probe takes an http:// URL");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let req = http::Request::get(uri).body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(3), client.request(req))
            .await
            .map_err(|_| anyhow::anyhow!("{url} did not answer within 3 s"))?
            .with_context(|| format!("cannot reach {url}"))?;
        anyhow::Ok(resp.status())
    })?;
    eprintln!("{url}: {status}");
    Ok(if status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn admin_call(method: http::Method, admin: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> anyhow::Result<ExitCode> {
    use http_body_util::BodyExt;
    let base = admin.trim_end_matches('/');
    let base = if base.contains("://") { base.to_string() } else { format!("http://{base}") };
    let url = format!("{base}{path}");
    let uri: http::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    anyhow::ensure!(uri.scheme_str() == Some("http"), "--admin takes an http:// address (the admin listener speaks plain HTTP)");
    let mut req = http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, body) = rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| anyhow::anyhow!("{base} did not answer within 10 s"))?
            .with_context(|| format!("cannot reach the admin API at {base} (--admin)"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    })?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            if let Some(diff) = v["diff"].as_str().or(v["error"]["diff"].as_str()).filter(|d| !d.is_empty()) {
                eprintln!("{diff}");
            }
        }
        Err(_) => println!("{}", String::from_utf8_lossy(&body)),
    }
    Ok(if status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Validate { file, output, authz } => validate(&file, output, authz),
        Cmd::Explain { config, route, output } => explain(&config, &route, output),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "modelgate", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Schema => {
            println!("{}", serde_json::to_string_pretty(&modelgate_config::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Probe { url } => probe(&url),
        Cmd::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gateway { config, run } => serve(Source::File(config), Vars::default(), run, None, None, |_| None),
        Cmd::Authz { config, mut run } => {
            run.authz = true;
            serve(Source::File(config), Vars::default(), run, None, None, |_| None)
        }
        Cmd::Serve {
            model_repository,
            model_name,
            listen,
            grpc_listen,
            ready_file,
            otlp_endpoint,
            otlp_protocol,
            trace_sample_ratio,
            ort_lib,
            tls_cert,
            tls_key,
        } => {
            let grpc_listen = grpc_listen.unwrap_or_else(|| grpc_beside(listen));
            let tls = tls_cert.zip(tls_key);
            let server = ModelServer { dir: model_repository, single: model_name, listen, grpc: Some(grpc_listen), ort_lib, tls };
            serve_models(server, ready_file, otlp_endpoint, &otlp_protocol, trace_sample_ratio)
        }
        Cmd::Doctor { model_repository, ort_lib, output } => {
            let discovery = modelgate_runtime::ort_lib::discover(ort_lib.as_deref());
            let host = modelgate_serve::Host::detect(discovery.loaded.is_some());
            let unreadable = || format!("cannot read model repository {}", model_repository.clone().unwrap_or_default().display());
            if output == OutputFormat::Json {
                let report =
                    modelgate_serve::doctor::report_json(discovery, &host, model_repository.as_deref()).with_context(unreadable)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let report = modelgate_serve::doctor::report(discovery, &host, model_repository.as_deref()).with_context(unreadable)?;
                print!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Up { listen, admin_listen, model_repository, ort_lib, state_dir, tls_cert, tls_key, run } => {
            up(listen, admin_listen, model_repository, ort_lib, state_dir, tls_cert.zip(tls_key), run)
        }
        Cmd::Keys { cmd } => keys(cmd),
        Cmd::Rollout { action, model, admin, token } => rollout(&action, &model, &admin, token.as_deref()),
        Cmd::Apply { namespace, file, dry_run, owner: OwnerArgs { admin, token } } => {
            let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let path = format!("/admin/namespaces/{namespace}{}", if dry_run { "?dry_run=true" } else { "" });
            admin_call(http::Method::PUT, &admin, &path, token.as_deref(), body)
        }
        Cmd::Delete { namespace, kind, name, dry_run, owner: OwnerArgs { admin, token } } => {
            let object = match (kind.as_str(), name.split_once('/')) {
                ("version", Some((model, version))) => format!("models/{model}/versions/{version}"),
                ("version", None) => anyhow::bail!("a version is named MODEL/VERSION, e.g. team-a-digits/2"),
                _ => format!("{kind}s/{name}"),
            };
            let path = format!("/admin/namespaces/{namespace}/{object}{}", if dry_run { "?dry_run=true" } else { "" });
            admin_call(http::Method::DELETE, &admin, &path, token.as_deref(), Vec::new())
        }
        Cmd::Audit { cmd: AuditCmd::Verify { files } } => audit_verify(&files),
        Cmd::Import { cmd: ImportCmd::Kong { file, output, strict } } => {
            let report = kong::import(&file, &output)?;
            let converted: Vec<String> = report.converted.iter().map(|(k, n)| format!("{n} {k}")).collect();
            eprintln!(
                "imported {} into {}: {}; {} not converted (see import-report.json)",
                file.display(),
                output.display(),
                converted.join(", "),
                report.not_converted.len()
            );
            for s in &report.not_converted {
                eprintln!("  not converted: {}: {}", s.path, s.reason);
            }
            Ok(if strict && !report.not_converted.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Cmd::BenchRuntime { model, batch, seconds, backend, dynamic_dim, threads } => {
            bench_runtime(&model, batch, seconds, &backend, dynamic_dim, threads)
        }
        Cmd::BenchLoad { url, rate, seconds, connections, headers } => {
            let headers = headers
                .iter()
                .map(|h| {
                    let (k, v) = h.split_once(':').with_context(|| format!("--header {h:?}: expected `name: value`"))?;
                    Ok((k.trim().parse::<http::HeaderName>()?, v.trim().parse::<http::HeaderValue>()?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            load::run(load::Load { url, rate, duration: std::time::Duration::from_secs_f64(seconds), connections, headers })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::DemoUpstream { listen, name, ready_file, status } => demo_upstream(listen, name, ready_file, status),
    }
}

/// `modelgate validate FILE`.
fn validate(file: &Path, output: OutputFormat, authz: bool) -> anyhow::Result<ExitCode> {
    let mut warnings = Vec::new();
    let result = modelgate_config::load(&Source::File(file.to_path_buf()), &Vars::default()).and_then(|c| {
        let summary = format!("{} routes, {} upstreams, version {}", c.routes.len(), c.upstreams.len(), c.meta.hash);
        warnings = modelgate_config::warnings(&c);
        modelgate_gateway::check(c, authz).map(|()| summary)
    });
    if output == OutputFormat::Json {
        let errors = result.as_ref().err().map(|e| e.0.clone()).unwrap_or_default();
        println!(
            "{}",
            serde_json::json!({ "ok": result.is_ok(), "file": file.display().to_string(), "errors": errors, "warnings": warnings })
        );
        return Ok(if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    match result {
        Ok(summary) => {
            println!("ok: {} ({summary})", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            println!("{} error(s) in {}", errors.0.len(), file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `modelgate explain`.
fn explain(file: &Path, name: &str, output: OutputFormat) -> anyhow::Result<ExitCode> {
    use modelgate_config::model::PathMatch;
    let config = match modelgate_config::load(&Source::File(file.to_path_buf()), &Vars::default()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(r) = config.routes.iter().find(|r| r.name == name) else {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!("no route {name:?} in {}; routes: {}", file.display(), names.join(", "));
    };
    let path = match &r.path {
        PathMatch::Exact(p) => format!("path {p}"),
        PathMatch::Template(p) => format!("path template {p}"),
        PathMatch::Prefix(p) => format!("path prefix {p}"),
    };
    let hosts: Vec<String> = r.hosts.iter().map(ToString::to_string).collect();
    let methods: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
    let up = r.upstream.as_ref().map(|u| &config.upstreams[u]);
    let targets: Vec<String> =
        up.iter().flat_map(|up| up.targets.iter()).map(|t| format!("{}://{}", if t.tls { "https" } else { "http" }, t.authority)).collect();
    if output == OutputFormat::Json {
        let from = |o: &modelgate_config::model::Origin| format!("{}: {}", o.file.display(), o.path);
        let plugins: Vec<_> = r.plugins.iter().map(|p| serde_json::json!({ "name": p.name, "from": from(&p.origin) })).collect();
        let doc = serde_json::json!({
            "route": r.name, "from": from(&r.origin),
            "match": { "path": path, "methods": methods, "hosts": hosts },
            "upstream": r.upstream, "targets": targets, "plugins": plugins,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("route {} ({}: {})", r.name, r.origin.file.display(), r.origin.path);
    println!(
        "  match: {path}; methods: {}; hosts: {}",
        if methods.is_empty() { "any".into() } else { methods.join(", ") },
        if hosts.is_empty() { "any".into() } else { hosts.join(", ") }
    );
    match &r.upstream {
        Some(u) => println!("  upstream: {u} → {}", targets.join(", ")),
        None => println!("  upstream: none (checks only, under `modelgate authz`)"),
    }
    println!("  plugins in effect ({}):", r.plugins.len());
    for p in &r.plugins {
        println!("    {:<18} from {}: {}", p.name, p.origin.file.display(), p.origin.path);
    }
    Ok(ExitCode::SUCCESS)
}

/// `modelgate serve`: the model server alone.
fn serve_models(
    server: ModelServer,
    ready_file: Option<PathBuf>,
    otlp_endpoint: Option<String>,
    otlp_protocol: &str,
    trace_sample_ratio: f64,
) -> anyhow::Result<ExitCode> {
    let protocol = match otlp_protocol {
        "grpc" => modelgate_telemetry::Protocol::Grpc,
        "http" => modelgate_telemetry::Protocol::Http,
        other => anyhow::bail!("--otlp-protocol must be grpc or http, not {other:?}"),
    };
    if !(0.0..=1.0).contains(&trace_sample_ratio) {
        anyhow::bail!("--trace-sample-ratio must be between 0 and 1");
    }
    let tracing = otlp_endpoint.map(|endpoint| modelgate_telemetry::ExportConfig {
        endpoint,
        protocol,
        sample_ratio: trace_sample_ratio,
        service_name: "modelgate-serve".into(),
        headers: Vec::new(),
        timeout: std::time::Duration::from_secs(10),
        max_queue_size: 2048,
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let (addr, grpc) = start_model_server(server, tracing).await?;
        let grpc = grpc.map(|a| a.to_string());
        announce(&serde_json::json!({ "event": "ready", "http": addr.to_string(), "grpc": grpc }), ready_file.as_deref())?;
        wait_for_signal().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `modelgate up`: the embedded example config in front of the model server, with a dev key.
fn up(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    model_repository: Option<PathBuf>,
    ort_lib: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
    run: RunArgs,
) -> anyhow::Result<ExitCode> {
    let mut text = include_str!("../../../examples/up.yaml").to_string();
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some((cert, key)) = &tls {
        // Absolute paths, written as JSON strings (valid YAML), so any file name survives.
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
        text.push_str(&format!(
            "\ntls: {{ certificates: [ {{ cert: {}, key: {} }} ] }}\n",
            serde_json::Value::from(abs(cert)),
            serde_json::Value::from(abs(key))
        ));
    }
    let source = Source::Inline { name: PathBuf::from("<embedded up.yaml>"), text: text.into() };
    let mut overrides = HashMap::new();
    overrides.insert("MG_LISTEN".to_string(), listen.to_string());
    overrides.insert("MG_ADMIN_LISTEN".to_string(), admin_listen.to_string());
    let serving = match &model_repository {
        // The dev consumer may call every model of the user's repository.
        Some(dir) => {
            overrides.insert("MG_MODELS".to_string(), "*".to_string());
            format!("the models in {}", dir.display())
        }
        None => "the digits model".to_string(),
    };
    // The bundled model is written to a temporary repository, removed on exit.
    let (repo, _bundled) = match model_repository {
        Some(dir) => (dir, None),
        None => {
            let tmp = bundled_repository()?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    // Secure by default: the example config asks for an API key; a dev key is made for this run, in a state
    // directory of this run only (removed on exit) unless the user names one.
    let (state, _removed_on_exit) = match state_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            (dir, None)
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("modelgate-up-").tempdir()?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let keys = state.join("keys.yaml");
    let (dev_key, _) = modelgate_auth::identity::apikey::create_in(&keys, "dev", vec![], vec![], None)?;
    overrides.insert("MG_KEYS_FILE".to_string(), keys.display().to_string());
    overrides.insert("MG_AUDIT_FILE".to_string(), state.join("audit.log").display().to_string());
    let extra = serde_json::json!({ "dev_key": dev_key, "keys_file": keys.display().to_string() });
    let audit = state.join("audit.log");
    let server =
        ModelServer { dir: repo, single: None, listen: "127.0.0.1:0".parse()?, grpc: Some("127.0.0.1:0".parse()?), ort_lib, tls: None };
    serve(source, Vars { overrides, ..Default::default() }, run, Some(server), Some(extra), move |gw| {
        Some(banner(gw, scheme, &serving, &dev_key, &keys, &audit))
    })
}

/// `modelgate keys …`.
fn keys(cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    use modelgate_auth::identity::apikey;
    match cmd {
        KeysCmd::Create { file, consumer, expires, scopes, groups } => {
            let (key, stored) = apikey::create_in(&file, &consumer, scopes, groups, expires)?;
            eprintln!(
                "created key {} for consumer {consumer:?}{} in {}; it is shown once:",
                stored.id,
                stored.expires.map(|e| format!(", expires {e}")).unwrap_or_default(),
                file.display()
            );
            println!("{key}");
        }
        KeysCmd::Import { file, consumer, scopes, groups } => {
            let keys: Vec<String> =
                std::io::read_to_string(std::io::stdin())?.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            anyhow::ensure!(!keys.is_empty(), "no key on standard input (one per line)");
            for k in apikey::import_in(&file, &consumer, scopes, groups, &keys)? {
                eprintln!("imported key {} for consumer {consumer:?} into {}", k.id, file.display());
            }
        }
        KeysCmd::List { file, output } => {
            anyhow::ensure!(
                file.exists(),
                "no key file at {}; create one with `modelgate keys create --file {} --consumer NAME`",
                file.display(),
                file.display()
            );
            let keys = apikey::list_in(&file)?;
            if output == OutputFormat::Text {
                println!("{:<14} {:<24} {:<22} {:<22} STATUS", "ID", "CONSUMER", "CREATED", "EXPIRES");
            }
            for k in keys {
                if output == OutputFormat::Text {
                    let status = if k.revoked {
                        "revoked"
                    } else if k.imported {
                        "active (imported)"
                    } else {
                        "active"
                    };
                    let expires = k.expires.as_deref().unwrap_or("never");
                    println!("{:<14} {:<24} {:<22} {:<22} {status}", k.id, k.consumer, k.created, expires);
                    continue;
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "id": k.id, "consumer": k.consumer, "scopes": k.scopes, "groups": k.groups,
                        "created": k.created, "expires": k.expires, "revoked": k.revoked, "imported": k.imported,
                    })
                );
            }
        }
        KeysCmd::Revoke { file, id, redis, redis_prefix } => {
            let k = apikey::revoke_in(&file, &id)?;
            eprintln!("revoked key {} of consumer {:?} in {}", k.id, k.consumer, file.display());
            if let Some(url) = redis {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(modelgate_auth::identity::revocations::publish(&url, &redis_prefix, &k.id))?;
                eprintln!("published the revocation through Redis");
            }
        }
        KeysCmd::SigningKey { out } => {
            let kid = modelgate_auth::identity::assertion::generate(&out)?;
            eprintln!("wrote a P-256 signing key to {}; its key id:", out.display());
            println!("{kid}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `modelgate audit verify FILE…`.
fn audit_verify(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        println!("{}", serde_json::json!({ "status": "not_found", "file": missing.display().to_string() }));
        eprintln!("error: no such file: {} (nothing was checked)", missing.display());
        return Ok(ExitCode::FAILURE);
    }
    match modelgate_telemetry::audit::verify(files) {
        Ok(v) => {
            println!(
                "{}",
                serde_json::json!({ "status": "intact", "files": v.files, "lines": v.lines, "checkpoints": v.checkpoints, "first_seq": v.first_seq, "last_seq": v.last_seq, "head": v.head })
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            println!(
                "{}",
                serde_json::json!({ "status": "broken", "file": b.file.display().to_string(), "line": b.line, "reason": b.reason })
            );
            eprintln!("audit log broken: {b}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `modelgate bench-runtime` (hidden): the runtime's physical limit for the benchmark.
fn bench_runtime(
    model: &Path,
    batch: usize,
    seconds: f64,
    backend: &str,
    dynamic_dim: usize,
    threads: Option<usize>,
) -> anyhow::Result<ExitCode> {
    use modelgate_runtime::{Backend, DataType, Tensor, TensorData};
    // The served default when not given: the cores this process may use.
    let threads = threads.or(Some(modelgate_serve::Host::detect(false).cores));
    let mut backend: Box<dyn Backend> = match backend {
        "tract" => Box::new(modelgate_runtime::TractBackend::load_with_threads(model, threads)?),
        "onnxruntime" => Box::new(modelgate_runtime::OrtBackend::load_with_threads(model, threads)?),
        other => anyhow::bail!("unknown backend {other:?}: tract or onnxruntime"),
    };
    let meta = backend.metadata().clone();
    let backend_inputs = |m: modelgate_runtime::ModelMetadata, batch: usize| -> Vec<Tensor> {
        m.inputs
            .iter()
            .map(|s| {
                let shape: Vec<usize> = s
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if d < 0 { if i == 0 { batch } else { dynamic_dim } } else { d as usize })
                    .collect();
                let n = shape.iter().product();
                let data = match s.datatype {
                    DataType::F32 => TensorData::F32((0..n).map(|i| (i % 17) as f32 / 17.0).collect()),
                    DataType::I64 => TensorData::I64(vec![1; n]),
                    _ => TensorData::F32(vec![0.0; n]),
                };
                Tensor { shape, data }
            })
            .collect()
    };
    #[allow(clippy::disallowed_methods, reason = "measures the runtime's throughput (reported, never a timer)")]
    let start = std::time::Instant::now();
    let mut runs = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        // Inputs are built each run, as the server builds them from each request.
        backend.run(backend_inputs(meta.clone(), batch))?;
        runs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "batch": batch, "executions": runs, "inferences_per_s": (runs as f64 * batch as f64) / secs }));
    let _ = &backend;
    Ok(ExitCode::SUCCESS)
}

/// `modelgate demo-upstream` (hidden): a real upstream process for `up` and the tests.
fn demo_upstream(listen: SocketAddr, name: String, ready_file: Option<PathBuf>, status: Option<u16>) -> anyhow::Result<ExitCode> {
    let status = status.map(hyper::StatusCode::from_u16).transpose().context("--status")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let addr = demo::start(listen, name, status).await.with_context(|| format!("cannot listen on {listen}"))?;
        announce(&serde_json::json!({ "event": "ready", "addr": addr.to_string() }), ready_file.as_deref())?;
        std::future::pending::<()>().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Loads the config, builds the runtime it asks for, starts the gateway (and the demo upstream for `up`), prints
/// the ready line, and serves until a signal.
fn serve(
    source: Source,
    mut vars: Vars,
    args: RunArgs,
    model_server: Option<ModelServer>,
    ready_extra: Option<serde_json::Value>,
    banner: impl Fn(&Gateway) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    // Load once up front to learn the worker count; `up` loads again inside the runtime with the model server's
    // address filled in.
    vars.overrides.entry("MODEL_SERVER".into()).or_insert_with(|| "127.0.0.1:1".into());
    vars.overrides.entry("MODEL_SERVER_GRPC".into()).or_insert_with(|| "127.0.0.1:1".into());
    let first = match modelgate_config::load(&source, &vars) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in modelgate_config::warnings(&first) {
        tracing::warn!("{w}");
    }
    let workers = args.workers.or(first.workers).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?
    };
    rt.block_on(async move {
        let config = if let Some(server) = model_server {
            // The model server exports spans where the gateway does, under its own service name.
            let tracing = first.tracing.as_ref().map(|t| modelgate_telemetry::ExportConfig {
                service_name: format!("{}-serve", t.service_name),
                ..modelgate_gateway::observe::export_config(t)
            });
            let (addr, grpc) = start_model_server(server, tracing).await?;
            vars.overrides.insert("MODEL_SERVER".into(), addr.to_string());
            if let Some(grpc) = grpc {
                vars.overrides.insert("MODEL_SERVER_GRPC".into(), grpc.to_string());
            }
            match modelgate_config::load(&source, &vars) {
                Ok(c) => c,
                Err(errors) => anyhow::bail!("{errors}"),
            }
        } else {
            first
        };
        let version = config.meta.hash.clone();
        let mode = if args.authz { modelgate_gateway::driver::Mode::Check } else { modelgate_gateway::driver::Mode::Proxy };
        let options = Options { after_reload: Some(alloc::release_free_memory), mode };
        let gw = match Gateway::start_with(source, vars, config, options).await {
            Ok(gw) => gw,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let mut ready = serde_json::json!({
            "event": "ready",
            "gateway": gw.addr.to_string(),
            "admin": gw.admin_addr.to_string(),
            "config_version": version,
            "workers": workers,
        });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (ready_extra, ready.as_object_mut()) {
            obj.extend(extra);
        }
        if let (Some(addr), Some(obj)) = (gw.redirect_addr, ready.as_object_mut()) {
            obj.insert("redirect_http".into(), addr.to_string().into());
        }
        if let (Some(addr), Some(obj)) = (gw.status_addr, ready.as_object_mut()) {
            obj.insert("status".into(), addr.to_string().into());
        }
        alloc::release_free_memory();
        announce(&ready, args.ready_file.as_deref())?;
        if let Some(text) = banner(&gw) {
            println!("{text}");
        }
        gw.run_until_signal().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The model server a command starts: its repository, addresses, and where onnxruntime's library is.
struct ModelServer {
    dir: PathBuf,
    /// `serve --model-name`: `dir` is this one model's directory.
    single: Option<String>,
    listen: SocketAddr,
    /// gRPC address, when gRPC is served.
    grpc: Option<SocketAddr>,
    ort_lib: Option<PathBuf>,
    /// Certificate chain and key files (PEM) to serve both listeners over TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

/// A listener's TLS from a certificate chain file and a key file (PEM), checked against each other.
fn tls_settings(cert: &Path, key: &Path) -> anyhow::Result<modelgate_listen::Settings> {
    use modelgate_listen::tls::{CertStore, server_config};
    let store = std::sync::Arc::new(CertStore::default());
    store.install(read_certificate(cert, key)?);
    watch_certificate(store.clone(), cert, key)?;
    Ok(modelgate_listen::Settings { tls: Some(server_config(store, false)), ..Default::default() })
}

/// The certificate chain and key files, checked against each other.
fn read_certificate(cert: &Path, key: &Path) -> anyhow::Result<modelgate_listen::tls::Certs> {
    use modelgate_listen::tls::{Certificate, Certs};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the certificate chain {}: {e}", cert.display()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("cannot read the private key {}: {e}", key.display()))?;
    Certs::prepare(&[Certificate { hosts: Vec::new(), chain, key: key_der }])
        .map_err(|(_, e)| anyhow::anyhow!("{} with {}: {e}", cert.display(), key.display()))
}

/// Rotation for `serve --tls-cert/--tls-key`: the files' directories are watched, and a change installs the new
/// certificate for new connections (open ones keep theirs). A pair that cannot be used (half written, key of
/// another certificate) is logged and the current certificate keeps serving; the next change tries again.
fn watch_certificate(store: std::sync::Arc<modelgate_listen::tls::CertStore>, cert: &Path, key: &Path) -> anyhow::Result<()> {
    use notify::Watcher;
    let (cert, key) = (std::path::absolute(cert)?, std::path::absolute(key)?);
    let names: Vec<std::ffi::OsString> = [&cert, &key].iter().filter_map(|p| p.file_name().map(|n| n.to_os_string())).collect();
    let (c, k) = (cert.clone(), key.clone());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_))
            || !ev.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
        {
            return;
        }
        match read_certificate(&c, &k) {
            Ok(certs) => {
                store.install(certs);
                tracing::info!(cert = %c.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the current one keeps serving"),
        }
    })?;
    let mut dirs: Vec<&Path> = [&cert, &key].iter().filter_map(|p| p.parent()).collect();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    }
    // Watched for as long as the process serves.
    std::mem::forget(watcher);
    Ok(())
}

/// Looks for onnxruntime, loads the repository (models load and warm up on a blocking thread) and starts serving it
/// over REST, and gRPC when asked. Returns the bound addresses.
async fn start_model_server(
    server: ModelServer,
    tracing: Option<modelgate_telemetry::ExportConfig>,
) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
    let ModelServer { dir, single, listen, grpc, ort_lib, tls } = server;
    let settings = match &tls {
        Some((cert, key)) => tls_settings(cert, key)?,
        None => modelgate_listen::Settings::default(),
    };
    let repo = tokio::task::spawn_blocking(move || {
        let host = modelgate_serve::detect_host(ort_lib.as_deref());
        modelgate_serve::Repository::load_as(&dir, single.as_deref(), host).map_err(|e| (dir, e))
    })
    .await?
    .map_err(|(dir, e)| anyhow::anyhow!("cannot read model repository {}: {e}", dir.display()))?;
    for entry in repo.index().into_iter().filter(|e| e.state != "READY") {
        eprintln!("model {} version {} is unavailable: {}", entry.name, entry.version.as_deref().unwrap_or("-"), entry.reason);
    }
    if let Some(t) = tracing {
        let _ = repo.tracer.set(modelgate_telemetry::Exporter::start(t)?);
    }
    let repo = std::sync::Arc::new(repo);
    let http =
        modelgate_serve::http::start(listen, repo.clone(), settings.clone()).await.with_context(|| format!("cannot listen on {listen}"))?;
    let grpc = match grpc {
        Some(addr) => Some(
            modelgate_serve::grpc::start(addr, repo, modelgate_listen::Settings { http2_only: true, ..settings })
                .await
                .with_context(|| format!("cannot listen on {addr} (gRPC)"))?,
        ),
        None => None,
    };
    Ok((http, grpc))
}

/// The digits model compiled into the binary, written to a fresh repository directory (removed when the returned
/// handle drops), so `up` works anywhere.
fn bundled_repository() -> anyhow::Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new().prefix("modelgate-up-models-").tempdir()?;
    let dir = tmp.path();
    let version = dir.join("digits").join("1");
    std::fs::create_dir_all(&version).with_context(|| format!("cannot create {}", version.display()))?;
    std::fs::write(version.join("model.onnx"), include_bytes!("../../../examples/models/digits/1/model.onnx"))?;
    std::fs::write(dir.join("digits").join("config.yaml"), include_str!("../../../examples/models/digits/config.yaml"))?;
    Ok(tmp)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Writes one JSON line atomically to `file` (temp file + rename, so readers never see a partial line), then
/// prints it on stdout.
fn announce(line: &serde_json::Value, file: Option<&Path>) -> anyhow::Result<()> {
    // The file first: whoever reads stdout may look for the file as soon as the line appears.
    if let Some(path) = file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{line}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{line}");
    Ok(())
}

fn banner(gw: &Gateway, scheme: &str, serving: &str, key: &str, keys: &Path, audit: &Path) -> String {
    let g = gw.addr;
    let a = gw.admin_addr;
    let (keys, audit) = (keys.display(), audit.display());
    format!(
        "\nmodelgate is up: gateway {scheme}://{g}, admin http://{a}, serving {serving}.\n\
         Calls need an API key; a dev key for consumer \"dev\" was made for this run (keys: {keys}; audit log: {audit};\n\
         check its chain with: modelgate audit verify {audit}).\n\
         Try (from the repository root):\n  \
         export MG_KEY={key}\n  \
         curl -s -X POST {scheme}://{g}/v2/models/digits/infer -H \"x-api-key: $MG_KEY\" -H 'content-type: application/json' -d @examples/digits/request.json\n  \
         curl -s {scheme}://{g}/v2/models/digits -H \"x-api-key: $MG_KEY\"\n  \
         gRPC on the same address (pip install 'tritonclient[grpc]'): python3 examples/digits/grpc_client.py {g} $MG_KEY\n  \
         curl -s http://{a}/admin/config/status\n\
         The web console (traffic, routes, models, keys, audit log, config): http://{a}/console/\n\
         Stop with Ctrl-C.\n"
    )
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The gRPC listener's default address: the REST listener's host, on the next port (0 stays 0).
fn grpc_beside(rest: SocketAddr) -> SocketAddr {
    let port = if rest.port() == 0 { 0 } else { rest.port().saturating_add(1) };
    SocketAddr::new(rest.ip(), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_defaults_to_the_rest_listeners_host() {
        assert_eq!(grpc_beside("127.0.0.1:8000".parse().unwrap()), "127.0.0.1:8001".parse().unwrap());
        assert_eq!(grpc_beside("0.0.0.0:8000".parse().unwrap()), "0.0.0.0:8001".parse().unwrap());
        assert_eq!(grpc_beside("127.0.0.1:0".parse().unwrap()), "127.0.0.1:0".parse().unwrap());
        assert_eq!(grpc_beside("[::1]:65535".parse().unwrap()), "[::1]:65535".parse().unwrap());
    }
}
