//! onnxruntime by default where it can be found: the search (`--ort-lib`, `ORT_DYLIB_PATH`, the python3 package,
//! the library directories), what `modelgate doctor` says, the fallback to tract with the reason and the way to the
//! faster runtime, and a library too old or not onnxruntime at all refused without a crash. Each case is its own
//! process (the library is process-wide). The real library is the PyPI wheel's (scripts/test sets ORT_DYLIB_PATH).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use modelgate_test_support::{ModelServer, Proc, bin, get, repo_root};

/// The real onnxruntime library the test command fetched.
fn real_lib() -> PathBuf {
    #[allow(clippy::disallowed_methods, reason = "the test command's own setting")]
    let lib = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH (scripts/test sets it to the PyPI wheel's library)");
    PathBuf::from(lib)
}

/// `modelgate doctor` in a controlled environment: no ORT_DYLIB_PATH or LD_LIBRARY_PATH unless given, and `PATH`
/// as given (so which python3 is found, if any, is the test's choice).
fn doctor(args: &[&str], envs: &[(&str, &str)], path: &str) -> String {
    let mut cmd = Command::new(bin());
    cmd.arg("doctor").args(args).env_remove("ORT_DYLIB_PATH").env_remove("LD_LIBRARY_PATH").env_remove("PYTHONPATH").env("PATH", path);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "doctor failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn line<'a>(report: &'a str, prefix: &str) -> &'a str {
    report.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in:\n{report}"))
}

/// A directory with nothing in it, as `PATH`: no python3.
fn empty_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Whether a standard library directory holds onnxruntime on this machine (then "not found" cannot happen).
fn system_has_onnxruntime() -> bool {
    ["/usr/local/lib", "/usr/lib", "/usr/lib64", "/usr/lib/x86_64-linux-gnu", "/opt/onnxruntime/lib"].iter().any(|d| {
        std::fs::read_dir(d)
            .map(|it| it.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with("libonnxruntime.so")))
            .unwrap_or(false)
    })
}

/// Builds the stand-in for an old onnxruntime (tests/data/fake-ort) with the machine's C compiler.
fn fake_lib(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .args(defines)
        .arg(repo_root().join("tests/data/fake-ort/old_onnxruntime.c"))
        .status()
        .expect("a C compiler (cc), as Rust's linker needs");
    assert!(status.success());
    out
}

fn models() -> String {
    repo_root().join("examples/models").display().to_string()
}

#[test]
fn found_through_ort_dylib_path_and_used_by_default() {
    let lib = real_lib();
    let empty = empty_dir();
    let r = doctor(&["--model-repository", &models()], &[("ORT_DYLIB_PATH", lib.to_str().unwrap())], empty.path().to_str().unwrap());
    let summary = line(&r, "onnxruntime:");
    assert!(summary.starts_with("onnxruntime: onnxruntime 1.") && summary.contains("from ORT_DYLIB_PATH"), "{r}");
    assert!(line(&r, "- ORT_DYLIB_PATH:").ends_with("— loaded"), "{r}");
    // Later places are still listed, not tried.
    assert!(line(&r, "- python3's onnxruntime package:").contains("no python3 on PATH"), "{r}");
    let digits = line(&r, "digits:");
    assert!(digits.contains("backend onnxruntime (default: onnxruntime's library was found)"), "{r}");
    assert!(digits.contains("(default: cores / instances)"), "{r}");
    // The same as one JSON document.
    let args = ["--model-repository", &models(), "--output", "json"];
    let j: serde_json::Value =
        serde_json::from_str(&doctor(&args, &[("ORT_DYLIB_PATH", lib.to_str().unwrap())], empty.path().to_str().unwrap())).unwrap();
    assert_eq!(j["onnxruntime"]["loaded"]["path"], lib.display().to_string(), "{j:#}");
    assert_eq!(j["onnxruntime"]["probes"][0]["outcome"], "loaded", "{j:#}");
    let model = &j["models"][0];
    assert_eq!(
        (model["name"].as_str(), model["served"].as_bool(), model["backend"].as_str()),
        (Some("digits"), Some(true), Some("onnxruntime")),
        "{j:#}"
    );
    assert!(j["cores"].as_u64().is_some_and(|c| c >= 1), "{j:#}");
    assert!(line(&r, "cores:").starts_with("cores: "), "{r}");
}

#[test]
fn ort_lib_flag_wins_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_lib(dir.path(), "libonnxruntime.so.1.9.0", &[]);
    let r = doctor(
        &["--ort-lib", real_lib().to_str().unwrap()],
        &[("ORT_DYLIB_PATH", old.to_str().unwrap())],
        empty_dir().path().to_str().unwrap(),
    );
    assert!(line(&r, "onnxruntime:").contains("from --ort-lib"), "{r}");
    assert!(line(&r, "- --ort-lib:").ends_with("— loaded"), "{r}");
    assert!(!r.contains("1.9.0"), "ORT_DYLIB_PATH is not looked at when --ort-lib is given:\n{r}");
}

/// A PyTorch user's venv: the `onnxruntime` package of the python3 on PATH (found without importing it).
#[test]
fn found_in_the_python_package_of_the_python3_on_path() {
    let site = tempfile::tempdir().unwrap();
    let capi = site.path().join("onnxruntime").join("capi");
    std::fs::create_dir_all(&capi).unwrap();
    std::fs::write(site.path().join("onnxruntime/__init__.py"), "raise SystemExit('the package must not be imported')\n").unwrap();
    let lib = real_lib();
    std::os::unix::fs::symlink(&lib, capi.join(lib.file_name().unwrap())).unwrap();
    std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"not the core library").unwrap();
    let python_dir = Command::new("python3").args(["-c", "import sys, os; print(os.path.dirname(sys.executable))"]).output().unwrap();
    let python_dir = String::from_utf8(python_dir.stdout).unwrap().trim().to_string();
    let r = doctor(&[], &[("PYTHONPATH", site.path().to_str().unwrap())], &python_dir);
    assert!(line(&r, "onnxruntime:").contains("from python3's onnxruntime package"), "{r}");
    let probe = line(&r, "- python3's onnxruntime package:");
    assert!(probe.contains("/onnxruntime/capi/libonnxruntime.so.") && probe.ends_with("— loaded"), "{r}");
}

#[test]
fn not_found_falls_back_to_tract_and_says_how_to_get_onnxruntime() {
    let r = doctor(&["--model-repository", &models()], &[], empty_dir().path().to_str().unwrap());
    if system_has_onnxruntime() {
        assert!(line(&r, "onnxruntime:").contains("from library directory"), "{r}");
        return;
    }
    let summary = line(&r, "onnxruntime:");
    assert!(summary.contains("onnxruntime not found; models run on tract"), "{r}");
    assert!(summary.contains("pip install onnxruntime") && summary.contains("--ort-lib"), "{r}");
    assert!(line(&r, "- ORT_DYLIB_PATH:").contains("absent: not set"), "{r}");
    assert!(line(&r, "- library directory:").contains("absent: no libonnxruntime.so"), "{r}");
    assert!(line(&r, "digits:").contains("backend tract (default: onnxruntime's library was not found)"), "{r}");
}

/// Too old for the `ort` crate's API, and not onnxruntime at all: refused with the reason, no crash, tract serves.
#[test]
fn a_library_too_old_or_not_onnxruntime_is_refused_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_lib(dir.path(), "libonnxruntime.so.1.9.0", &[]);
    let empty = empty_dir();
    let r = doctor(&["--model-repository", &models()], &[("ORT_DYLIB_PATH", old.to_str().unwrap())], empty.path().to_str().unwrap());
    let probe = line(&r, "- ORT_DYLIB_PATH:");
    assert!(probe.contains("refused: onnxruntime 1.9.0 is too old: this build needs 1.17 or newer"), "{r}");
    if !system_has_onnxruntime() {
        let summary = line(&r, "onnxruntime:");
        assert!(summary.contains("models run on tract") && summary.contains("libonnxruntime.so.1.9.0 was refused"), "{r}");
        assert!(line(&r, "digits:").contains("backend tract"), "{r}");
    }
    let other = fake_lib(dir.path(), "libother.so", &["-DNOT_ORT"]);
    let r = doctor(&["--ort-lib", other.to_str().unwrap()], &[], empty.path().to_str().unwrap());
    assert!(line(&r, "- --ort-lib:").contains("refused: not an onnxruntime library (no OrtGetApiBase)"), "{r}");
    let r = doctor(&["--ort-lib", "/nonexistent/libonnxruntime.so"], &[], empty.path().to_str().unwrap());
    assert!(line(&r, "- --ort-lib:").contains("absent: no such file"), "{r}");
}

/// The served model reports the runtime it got: onnxruntime with the library, tract without it (and the server
/// says why on stderr); a model pinned to onnxruntime without the library is unavailable with the reason.
#[tokio::test]
async fn serve_uses_onnxruntime_when_found_and_tract_otherwise() {
    let lib = real_lib();
    let repo = repo_root().join("examples/models");
    let s = ModelServer::start_with(&repo, &["--ort-lib", lib.to_str().unwrap()], &[]).await;
    let stats = get(&s.url("/v2/models/digits/stats")).await.json();
    assert_eq!(stats["model_stats"][0]["backend"], "onnxruntime", "{stats}");
    // No threads in config.yaml: the cores this process may use (the server inherits the test's).
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(stats["model_stats"][0]["threads"], cores, "{stats}");

    if system_has_onnxruntime() {
        return;
    }
    let empty = empty_dir();
    let dir = tempfile::tempdir().unwrap();
    let old = fake_lib(dir.path(), "libonnxruntime.so.1.9.0", &[]);
    let mut envs = vec![("PATH", empty.path().to_str().unwrap()), ("ORT_DYLIB_PATH", old.to_str().unwrap())];
    let s = ModelServer::start_with(&repo, &[], &envs).await;
    let stats = get(&s.url("/v2/models/digits/stats")).await.json();
    assert_eq!(stats["model_stats"][0]["backend"], "tract", "{stats}");

    // Pinned to onnxruntime without the library: that model is unavailable, with the reason; readiness says so.
    let pinned = tempfile::tempdir().unwrap();
    let v = pinned.path().join("digits").join("1");
    std::fs::create_dir_all(&v).unwrap();
    std::fs::copy(repo.join("digits/1/model.onnx"), v.join("model.onnx")).unwrap();
    std::fs::write(pinned.path().join("digits/config.yaml"), "backend: onnxruntime\n").unwrap();
    envs[1].1 = ""; // empty is unset
    let s = ModelServer::start_with(pinned.path(), &[], &envs).await;
    assert_eq!(get(&s.url("/v2/health/ready")).await.status, 503, "not ready: the pinned runtime is missing");
    let r = get(&s.url("/v2/models/digits/versions/1")).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("onnxruntime not found"), "{}", r.json());
}

/// The threads default follows the CPU affinity the server is started with (`taskset`, as a container's cpuset or a
/// benchmark's pinning would set it), not the machine's core count.
#[tokio::test]
async fn default_threads_follow_cpu_affinity() {
    let repo = repo_root().join("examples/models");
    let mut cmd = tokio::process::Command::new("taskset");
    cmd.args(["-c", "0"]).arg(bin());
    let args = ["serve", "--model-repository", repo.to_str().unwrap(), "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"];
    cmd.args(args);
    let p = Proc::spawn_command(cmd, &args).await;
    let stats = get(&format!("http://{}/v2/models/digits/stats", p.ready["http"].as_str().unwrap())).await.json();
    assert_eq!(stats["model_stats"][0]["threads"], 1, "{stats}");
}
