//! `modelgate doctor`: what the model server would run with on this machine, and why — cores, where onnxruntime's
//! library was looked for and found, and each model's runtime, threads, instances and batching — without loading any
//! model.

use std::fmt::Write as _;
use std::path::Path;

use modelgate_runtime::ort_lib::Discovery;

use crate::config::{Host, ModelConfig};

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
    let mut dirs: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for model in dirs {
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
