//! Records the git commit the binary is built from, for `modelgate --version`.
//!
//! Reads `.git` as files (HEAD, then the loose or packed ref) instead of running `git`, so a build needs no tool
//! beyond the Rust toolchain. Outside a checkout (a source tarball) the commit is `unknown`, unless the packager sets
//! `MODELGATE_GIT_COMMIT`.
#![allow(clippy::disallowed_methods, reason = "a build script reads cargo's environment")]

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=MODELGATE_GIT_COMMIT");
    let commit = std::env::var("MODELGATE_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").ok()?);
        let git_dir = manifest.ancestors().find_map(git_dir)?;
        head_commit(&git_dir)
    });
    let commit = commit.map_or_else(|| "unknown".to_owned(), |c| c.chars().take(12).collect());
    println!("cargo:rustc-env=MODELGATE_GIT_COMMIT={commit}");
}

/// The git directory of a checkout rooted at `dir`: `dir/.git`, or where a `.git` file (worktree) points.
fn git_dir(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let pointer = fs::read_to_string(&dot_git).ok()?;
    let target = pointer.strip_prefix("gitdir:")?.trim();
    Some(dir.join(target))
}

/// The commit HEAD names, following one symbolic ref through loose refs, then `packed-refs`.
fn head_commit(git_dir: &Path) -> Option<String> {
    let head_file = git_dir.join("HEAD");
    println!("cargo:rerun-if-changed={}", head_file.display());
    let head = fs::read_to_string(head_file).ok()?;
    let Some(name) = head.trim().strip_prefix("ref:").map(str::trim) else {
        return Some(head.trim().to_owned());
    };
    // A linked worktree keeps its refs in the main repository (`commondir`).
    let common = fs::read_to_string(git_dir.join("commondir")).map_or_else(|_| git_dir.to_owned(), |c| git_dir.join(c.trim()));
    for dir in [git_dir, common.as_path()] {
        let loose = dir.join(name);
        println!("cargo:rerun-if-changed={}", loose.display());
        if let Ok(id) = fs::read_to_string(&loose) {
            return Some(id.trim().to_owned());
        }
    }
    let packed = common.join("packed-refs");
    println!("cargo:rerun-if-changed={}", packed.display());
    fs::read_to_string(packed).ok()?.lines().find_map(|line| {
        let (id, r) = line.split_once(' ')?;
        (r == name).then(|| id.to_owned())
    })
}
