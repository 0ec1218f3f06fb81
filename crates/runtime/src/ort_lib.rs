//! Finding onnxruntime's shared library at start. The `ort` crate is built with `load-dynamic`, so nothing is linked:
//! the model server looks for `libonnxruntime` where a PyTorch user already has it and loads the first one that
//! works, once per process (the library and its environment are process-wide). Where none is found, models run on
//! tract and [`Discovery::advice`] says how to get the faster runtime.
//!
//! Search order (the first library that loads wins; every attempt is recorded for `modelgate doctor`):
//! 1. `--ort-lib PATH` (the caller's explicit choice), else `ORT_DYLIB_PATH`;
//! 2. the `onnxruntime` package of the `python3` on `PATH` (`<package>/capi/libonnxruntime.so*`, the PyPI wheel's
//!    layout), found with `importlib.util.find_spec` — the package is not imported;
//! 3. the directories of `LD_LIBRARY_PATH`, then `/usr/local/lib`, `/usr/lib`, `/usr/lib64`,
//!    `/usr/lib/<arch>-linux-gnu`, `/opt/onnxruntime/lib`.
//!
//! A library older than the `ort` crate's API (onnxruntime 1.[`ort::MINOR_VERSION`]) is refused by `ort` with both
//! versions named; a file that is not onnxruntime is refused because it lacks `OrtGetApiBase`. Neither crashes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where a candidate library came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--ort-lib`.
    Flag,
    /// `ORT_DYLIB_PATH`.
    Env,
    /// The `onnxruntime` package of the `python3` on `PATH`.
    Python,
    /// A directory of `LD_LIBRARY_PATH` or a standard library directory.
    LibraryDir,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "--ort-lib",
            Source::Env => "ORT_DYLIB_PATH",
            Source::Python => "python3's onnxruntime package",
            Source::LibraryDir => "library directory",
        })
    }
}

/// One place looked at, and what was there.
#[derive(Debug, Clone)]
pub struct Probe {
    pub source: Source,
    /// The file tried, or the directory / command looked at when nothing was there.
    pub place: String,
    pub outcome: Outcome,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded: this is the library in use.
    Loaded,
    /// Nothing there (no file, no package, no python3).
    Absent(String),
    /// A file was there but could not be used: too old, not onnxruntime, not loadable.
    Refused(String),
    /// Not tried: an earlier place already gave a library.
    Skipped,
}

/// The library in use.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub source: Source,
    /// onnxruntime's version, e.g. `1.23.2` (from its build information; `unknown` if it does not say).
    pub version: String,
}

/// The outcome of the search: every probe, and the library loaded if any.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub probes: Vec<Probe>,
    pub loaded: Option<Loaded>,
}

struct State {
    discovery: Discovery,
    environment: Option<ort::environment::Environment>,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Searches once per process (later calls return the first result, whatever `flag` they pass) and loads the first
/// library that works.
pub fn discover(flag: Option<&Path>) -> &'static Discovery {
    &STATE.get_or_init(|| search(flag)).discovery
}

/// The environment sessions are built in, when a library was loaded.
pub(crate) fn environment() -> Option<&'static ort::environment::Environment> {
    STATE.get().and_then(|s| s.environment.as_ref())
}

fn search(flag: Option<&Path>) -> State {
    let mut probes = Vec::new();
    let mut environment = None;
    let mut loaded = None;
    for candidate in candidates(flag) {
        let (source, candidate) = match candidate {
            Candidate::File(source, path) => (source, path),
            Candidate::Nothing(probe) => {
                probes.push(probe);
                continue;
            }
        };
        if loaded.is_some() {
            probes.push(Probe { source, place: candidate.display().to_string(), outcome: Outcome::Skipped });
            continue;
        }
        let outcome = match try_load(&candidate) {
            Ok((env, info)) => {
                environment = Some(env);
                let version = version_of(&candidate, info);
                loaded = Some(Loaded { path: candidate.clone(), source, version });
                Outcome::Loaded
            }
            Err(why) => why,
        };
        probes.push(Probe { source, place: candidate.display().to_string(), outcome });
    }
    State { discovery: Discovery { probes, loaded }, environment }
}

/// A place in the search: a file to try, or a place with nothing to try (recorded as it was).
enum Candidate {
    File(Source, PathBuf),
    Nothing(Probe),
}

/// Every place in search order.
fn candidates(flag: Option<&Path>) -> Vec<Candidate> {
    let mut out = Vec::new();
    let absent = |source, place: String, why: &str| Candidate::Nothing(Probe { source, place, outcome: Outcome::Absent(why.into()) });
    #[allow(clippy::disallowed_methods, reason = "ORT_DYLIB_PATH is onnxruntime's own documented setting, read once at start")]
    let env = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty());
    out.push(match (flag, env) {
        (Some(path), _) => Candidate::File(Source::Flag, path.to_path_buf()),
        (None, Some(path)) => Candidate::File(Source::Env, PathBuf::from(path)),
        (None, None) => absent(Source::Env, "-".into(), "not set (nor --ort-lib)"),
    });
    out.push(match python_package() {
        Ok(dir) => {
            let capi = dir.join("capi");
            match libraries_in(&capi).into_iter().next() {
                Some(lib) => Candidate::File(Source::Python, lib),
                None => absent(
                    Source::Python,
                    capi.display().to_string(),
                    "the package has no libonnxruntime.so (older wheels link it into the Python module: pip install -U onnxruntime)",
                ),
            }
        }
        Err(why) => absent(Source::Python, "python3".into(), &why),
    });
    let dirs = library_dirs();
    let found: Vec<Candidate> =
        dirs.iter().filter_map(|d| libraries_in(d).into_iter().next()).map(|lib| Candidate::File(Source::LibraryDir, lib)).collect();
    if found.is_empty() {
        let place = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":");
        out.push(absent(Source::LibraryDir, place, "no libonnxruntime.so"));
    }
    out.extend(found);
    out
}

/// The directory of the `onnxruntime` package of the `python3` on `PATH`, without importing it.
fn python_package() -> Result<PathBuf, String> {
    const FIND: &str = "import importlib.util as u\ns = u.find_spec('onnxruntime')\n\
                        print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let out = Command::new("python3").args(["-c", FIND]).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no python3 on PATH".to_string(),
        _ => format!("cannot run python3: {e}"),
    })?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err("python3 has no onnxruntime package (pip install onnxruntime)".into());
    }
    Ok(PathBuf::from(dir))
}

/// `LD_LIBRARY_PATH`'s directories, then the standard ones.
fn library_dirs() -> Vec<PathBuf> {
    #[allow(clippy::disallowed_methods, reason = "the dynamic loader's own search path, read once at start")]
    let ld = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&ld).filter(|p| !p.as_os_str().is_empty()).collect();
    dirs.extend(["/usr/local/lib", "/usr/lib", "/usr/lib64", "/opt/onnxruntime/lib"].map(PathBuf::from));
    dirs.insert(dirs.len() - 1, PathBuf::from(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH)));
    dirs
}

/// `libonnxruntime.so` and its versioned names (`libonnxruntime.so.1.23.2`) in `dir`, shortest name first; not the
/// execution-provider plugins (`libonnxruntime_providers_*`).
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut libs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "libonnxruntime.so" || n.starts_with("libonnxruntime.so.")))
        .collect();
    libs.sort_by_key(|p| p.as_os_str().len());
    libs
}

/// Loads the library and builds the process's onnxruntime environment; returns it with the library's build
/// information.
fn try_load(path: &Path) -> Result<(ort::environment::Environment, &'static str), Outcome> {
    if !path.exists() {
        return Err(Outcome::Absent("no such file".into()));
    }
    let builder = ort::init_from(path).map_err(|e| Outcome::Refused(refusal(&e)))?;
    let env = builder.with_name("modelgate").build().map_err(|e| Outcome::Refused(e.to_string()))?;
    Ok((env, ort::info()))
}

fn refusal(e: &ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::BadVersion { version_str, .. } => {
            format!("onnxruntime {version_str} is too old: this build needs 1.{} or newer (pip install -U onnxruntime)", ort::MINOR_VERSION)
        }
        ort::LoadDynamicError::MissingApi { .. } => "not an onnxruntime library (no OrtGetApiBase)".into(),
        other => other.to_string(),
    }
}

/// onnxruntime's version: from the file name (`libonnxruntime.so.1.23.2`), else from its build information
/// (`… git-branch=rel-1.23.2, …`), else `unknown`.
fn version_of(path: &Path, info: &str) -> String {
    let numeric = |v: &&str| v.chars().next().is_some_and(|c| c.is_ascii_digit());
    let from_name = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("libonnxruntime.so.")).filter(numeric);
    let from_info = || info.split(|c: char| c == ',' || c.is_whitespace()).find_map(|p| p.strip_prefix("git-branch=rel-")).filter(numeric);
    from_name.or_else(from_info).unwrap_or("unknown").to_string()
}

// === impl Discovery ===

impl Discovery {
    /// One line for the log: what is in use, or why nothing is and how to get it.
    pub fn summary(&self) -> String {
        match &self.loaded {
            Some(l) => format!("onnxruntime {} from {} ({})", l.version, l.source, l.path.display()),
            None => format!("onnxruntime not found; models run on tract. {}", self.advice()),
        }
    }

    /// How to get the faster runtime, naming the first refusal if a library was there but unusable.
    pub fn advice(&self) -> String {
        let refused = self.probes.iter().find_map(|p| match &p.outcome {
            Outcome::Refused(why) => Some(format!("{} was refused: {why}. ", p.place)),
            _ => None,
        });
        format!(
            "{}For the faster runtime: `pip install onnxruntime` for the python3 on PATH (or activate the venv that has it), \
             or pass --ort-lib /path/to/libonnxruntime.so",
            refused.unwrap_or_default()
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Loaded => f.write_str("loaded"),
            Outcome::Absent(why) => write!(f, "absent: {why}"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Skipped => f.write_str("not tried (already loaded one)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_file_name_or_the_build_branch() {
        let plain = Path::new("/usr/lib/libonnxruntime.so");
        assert_eq!(version_of(Path::new("/x/capi/libonnxruntime.so.1.32.0"), ""), "1.32.0");
        assert_eq!(version_of(plain, "ORT Build Info: git-branch=rel-1.23.2, git-commit-id=a83fc4d, build type=Release"), "1.23.2");
        assert_eq!(version_of(plain, "ORT Build Info: git-branch=main, git-commit-id=1"), "unknown");
        assert_eq!(version_of(plain, ""), "unknown");
    }

    #[test]
    fn libraries_are_the_core_library_not_the_providers() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["libonnxruntime.so.1.23.2", "libonnxruntime_providers_shared.so", "libonnxruntime.so", "README"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let names: Vec<_> = libraries_in(dir.path()).iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(names, ["libonnxruntime.so", "libonnxruntime.so.1.23.2"]);
        assert!(libraries_in(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn standard_directories_follow_ld_library_path() {
        let dirs = library_dirs();
        let n = dirs.len();
        assert_eq!(dirs[n - 1], PathBuf::from("/opt/onnxruntime/lib"));
        assert!(dirs[n - 2].to_str().unwrap().ends_with("-linux-gnu"));
        assert_eq!(dirs[n - 5], PathBuf::from("/usr/local/lib"));
    }

    #[test]
    fn advice_names_a_refused_library() {
        let d = Discovery {
            probes: vec![Probe {
                source: Source::Env,
                place: "/x/libonnxruntime.so.1.16.3".into(),
                outcome: Outcome::Refused("onnxruntime 1.16.3 is too old".into()),
            }],
            loaded: None,
        };
        let s = d.summary();
        assert!(s.starts_with("onnxruntime not found; models run on tract. /x/libonnxruntime.so.1.16.3 was refused"), "{s}");
        assert!(s.contains("pip install onnxruntime"), "{s}");
    }
}
