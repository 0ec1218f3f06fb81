//! The container image and Kubernetes manifests, checked offline (deploy/kubernetes/check, docs/kubernetes.md):
//! every overlay renders and validates, and the check refuses each kind of broken manifest.

use std::path::{Path, PathBuf};

use modelgate_test_support::{bin, repo_root};

/// The check's python (scripts/fetch-deploytools installs it; ./scripts/test runs that first).
fn python() -> PathBuf {
    let p = repo_root().join("target/deploytools/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/fetch-deploytools (./scripts/test does)", p.display());
    p
}

fn check(overlays: &[&Path]) -> (bool, String) {
    let out = std::process::Command::new(python())
        .arg(repo_root().join("deploy/kubernetes/check"))
        .args(overlays)
        .env("MODELGATE_BIN", bin())
        .output()
        .expect("run deploy/kubernetes/check");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn every_overlay_and_the_dockerfile_validate_offline() {
    let (ok, out) = check(&[]);
    assert!(ok, "{out}");
    for overlay in ["dev", "prod", "kserve"] {
        assert!(out.contains(&format!("{overlay}: ")) && out.contains("objects checked"), "{out}");
    }
}

/// One broken overlay per rule, each on top of a real one; every one is refused with its reason.
#[test]
fn the_check_refuses_broken_manifests() {
    let dir = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let overlay = |name: &str, base: &str, patch: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        let base = repo_root().join("deploy/kubernetes/overlays").join(base);
        let rel = pathdiff(&base, &d);
        std::fs::write(d.join("kustomization.yaml"), format!("resources: [{rel}]\npatches:\n{patch}")).unwrap();
        d
    };
    let json6902 = |kind: &str, name: &str, ops: &str| {
        format!(
            "  - target: {{ kind: {kind}, name: {name} }}\n    patch: |-\n{}",
            ops.lines().map(|l| format!("      {l}\n")).collect::<String>()
        )
    };
    let cases = [
        (
            overlay(
                "typo",
                "dev",
                &json6902(
                    "Deployment",
                    "modelgate-gateway",
                    "- op: add\n  path: /spec/template/spec/containers/0/imagePullPolcy\n  value: Always",
                ),
            ),
            "imagePullPolcy",
        ),
        (
            overlay(
                "monitor",
                "dev",
                &json6902("ServiceMonitor", "modelgate-gateway", "- op: replace\n  path: /spec/endpoints/0/interval\n  value: 15"),
            ),
            "interval must be string",
        ),
        (
            overlay(
                "isvc",
                "kserve",
                &json6902("InferenceService", "digits", "- op: add\n  path: /spec/predictor/model/storageURI\n  value: s3://x"),
            ),
            "storageURI",
        ),
        (
            overlay(
                "hpa",
                "dev",
                &json6902(
                    "HorizontalPodAutoscaler",
                    "modelgate-model-server",
                    "- op: replace\n  path: /spec/metrics/0/pods/metric/name\n  value: queue_depth",
                ),
            ),
            "which no prometheus-adapter rule publishes",
        ),
        (
            overlay(
                "caps",
                "dev",
                &json6902(
                    "Deployment",
                    "modelgate-redis",
                    "- op: remove\n  path: /spec/template/spec/containers/0/securityContext/capabilities",
                ),
            ),
            "capabilities not dropped",
        ),
        (
            overlay(
                "config",
                "dev",
                &json6902(
                    "ConfigMap",
                    "modelgate-gateway-config",
                    "- op: replace\n  path: /data/gateway.yaml\n  value: \"listen: 0.0.0.0:8080\\nroutes: [ { name: r, upstream: nowhere } ]\\n\"",
                ),
            ),
            "the gateway config does not validate",
        ),
    ];
    let paths: Vec<&Path> = cases.iter().map(|(p, _)| p.as_path()).collect();
    let (ok, out) = check(&paths);
    assert!(!ok, "{out}");
    for (p, why) in &cases {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(out.lines().any(|l| l.starts_with(&format!("FAIL: {name}")) && l.contains(why)), "{name}: {why}\n{out}");
    }
}

/// `to` relative to `from` (both absolute), for a kustomization's `resources`.
fn pathdiff(to: &Path, from: &Path) -> String {
    let (to, from) = (to.canonicalize().unwrap(), from.canonicalize().unwrap());
    let common = to.components().zip(from.components()).take_while(|(a, b)| a == b).count();
    let up = from.components().count() - common;
    let mut out: Vec<String> = std::iter::repeat_n("..".to_string(), up).collect();
    out.extend(to.components().skip(common).map(|c| c.as_os_str().to_string_lossy().into_owned()));
    out.join("/")
}
