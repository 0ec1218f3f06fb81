//! `modelgate doctor`: what the model server would run with on this machine, and why — cores, where onnxruntime's
//! library was looked for and found, and each model's runtime, threads, instances and batching — without loading any
//! model.

use std::fmt::Write as _;
use std::path::Path;

use modelgate_runtime::ort_lib::Discovery;

use crate::config::{Host, ModelConfig};

/// [`report`] as one JSON document: `cores`, `onnxruntime` (`loaded`: path, source, version, or null; `probes`: each
/// place looked at with its outcome) and, with a repository, `models` (each with its plan, or the error that keeps it
/// from being served).
pub fn report_json(discovery: &Discovery, host: &Host, repository: Option<&Path>) -> std::io::Result<serde_json::Value> {
    let probes: Vec<serde_json::Value> = discovery
        .probes
        .iter()
        .map(|p| serde_json::json!({ "source": p.source.to_string(), "place": p.place, "outcome": p.outcome.to_string() }))
        .collect();
    let loaded = discovery
        .loaded
        .as_ref()
        .map(|l| serde_json::json!({ "path": l.path.display().to_string(), "source": l.source.to_string(), "version": l.version }));
    let mut out = serde_json::json!({
        "cores": host.cores,
        "onnxruntime": { "summary": discovery.summary(), "loaded": loaded, "probes": probes },
    });
    let Some(dir) = repository else { return Ok(out) };
    let mut models = Vec::new();
    for model in model_dirs(dir)? {
        let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        models.push(match ModelConfig::load(&model) {
            Err(e) => serde_json::json!({ "name": name, "served": false, "error": e.to_string() }),
            Ok(config) => {
                let plan = config.plan(host);
                serde_json::json!({
                    "name": name, "served": true,
                    "backend": plan.backend.as_str(), "backend_reason": plan.backend_reason,
                    "threads": plan.threads, "threads_reason": plan.threads_reason,
                    "instances": plan.instances, "max_batch_size": config.max_batch_size,
                })
            }
        });
    }
    out["models"] = models.into();
    Ok(out)
}

fn model_dirs(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut dirs: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    Ok(dirs)
}

/// The report, as printed. `repository` adds one block per model directory.
pub fn report(discovery: &Discovery, host: &Host, repository: Option<&Path>) -> std::io::Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "cores: {} (those this process may use: CPU affinity and cgroup quota)", host.cores);
    let _ = writeln!(out, "onnxruntime: {}", discovery.summary());
    let _ = writeln!(out, "  looked at, in order:");
    for p in &discovery.probes {
        let _ = writeln!(out, "  - {}: {} — {}", p.source, p.place, p.outcome);
    }
    let Some(dir) = repository else { return Ok(out) };
    let _ = writeln!(out, "models in {}:", dir.display());
    for model in model_dirs(dir)? {
        let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match ModelConfig::load(&model) {
            Err(e) => {
                let _ = writeln!(out, "  {name}: not served: {e}");
            }
            Ok(config) => {
                let plan = config.plan(host);
                let batching = match config.max_batch_size {
                    0 => "off (max_batch_size: 0)".to_string(),
                    n => format!("up to {n} rows when every input and output has a dynamic first dimension"),
                };
                let _ = writeln!(
                    out,
                    "  {name}: backend {} ({}); threads {} ({}); instances {}; batching {batching}",
                    plan.backend.as_str(),
                    plan.backend_reason,
                    plan.threads,
                    plan.threads_reason,
                    plan.instances,
                );
            }
        }
    }
    Ok(out)
}
