//! The shape of the code: no import cycle between the modules of any crate (cargo already refuses one between
//! crates), and every crate's `lib.rs` opens with a paragraph on its role.
//!
//! A module's references are the `crate::…` and `super::…` paths in its code (comments and `#[cfg(test)]` modules
//! left out), each resolved to the deepest module it names. A parent declaring a child (`mod x;`) is not a
//! reference; a child that reaches back into its parent's items is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use modelgate_test_support::repo_root;

/// Module path (`a::b`, the root is ``) → the source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The code of a file without comments, string contents or `#[cfg(test)]` items.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut pending_test = false;
    for line in text.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let trimmed = line.trim();
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        if pending_test && !trimmed.is_empty() {
            pending_test = false;
            if opens > closes {
                skip_depth = Some(depth);
            } else {
                continue;
            }
        }
        depth = depth + opens - closes.min(depth + opens);
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The modules `module`'s code refers to (itself and the root left out).
fn references(module: &str, code: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut paths = Vec::new();
    for (i, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
        if code[..i].chars().next_back().is_some_and(|c| ident(c) || c == ':') {
            continue;
        }
        let rest = &code[i..];
        let end =
            rest.find(|c: char| !(ident(c) || c == ':' || c == '{' || c == '}' || c == ',' || c == ' ' || c == '*')).unwrap_or(rest.len());
        paths.push(&rest[..end]);
    }
    for p in paths {
        let (base, tail) = if let Some(t) = p.strip_prefix("crate::") {
            (Vec::new(), t)
        } else {
            let mut parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
            let mut t = p;
            while let Some(r) = t.strip_prefix("super::") {
                parent.pop();
                t = r;
            }
            (parent, t)
        };
        // `a::{b, c::d}` names several paths: expand one level of braces.
        let (prefix, names): (&str, Vec<&str>) = match tail.split_once('{') {
            Some((pre, list)) => (pre, list.trim_end_matches(['}', ' ']).split(',').map(str::trim).collect()),
            None => ("", vec![tail]),
        };
        for name in names {
            let mut segs: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            segs.extend(
                prefix
                    .split("::")
                    .chain(name.split("::"))
                    .filter(|s| !s.is_empty() && *s != "self" && !s.contains(['{', '}', ' ']))
                    .map(String::from),
            );
            // The deepest known module the path names.
            while !segs.is_empty() && !known.contains_key(&segs.join("::")) {
                segs.pop();
            }
            let target = segs.join("::");
            if !target.is_empty() && target != module {
                refs.insert(target);
            }
        }
    }
    refs
}

/// The groups of modules that import each other (strongly connected components of more than one module).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two passes of Kosaraju's algorithm.
    fn order(n: &str, g: &BTreeMap<String, BTreeSet<String>>, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if !seen.insert(n.to_string()) {
            return;
        }
        for m in g.get(n).into_iter().flatten() {
            order(m, g, seen, out);
        }
        out.push(n.to_string());
    }
    let mut reversed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (n, ms) in graph {
        for m in ms {
            reversed.entry(m.clone()).or_default().insert(n.clone());
        }
    }
    let (mut seen, mut finished) = (BTreeSet::new(), Vec::new());
    for n in graph.keys() {
        order(n, graph, &mut seen, &mut finished);
    }
    let mut assigned = BTreeSet::new();
    let mut groups = Vec::new();
    for n in finished.iter().rev() {
        let mut group = Vec::new();
        order(n, &reversed, &mut assigned, &mut group);
        if group.len() > 1 {
            group.sort();
            groups.push(group);
        }
    }
    groups
}

fn crates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(repo_root().join("crates")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("src").is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn no_module_of_any_crate_is_in_an_import_cycle() {
    let (mut checked, mut found) = (0, Vec::new());
    for dir in crates() {
        let known = modules(&dir.join("src"));
        let graph: BTreeMap<String, BTreeSet<String>> =
            known.iter().map(|(m, file)| (m.clone(), references(m, &code(&std::fs::read_to_string(file).unwrap()), &known))).collect();
        checked += graph.len();
        for group in cycles(&graph) {
            let edges: Vec<String> =
                group.iter().flat_map(|a| graph[a].iter().filter(|b| group.contains(b)).map(move |b| format!("{a} → {b}"))).collect();
            found.push(format!("{}: {}", dir.file_name().unwrap().to_string_lossy(), edges.join(", ")));
        }
    }
    assert!(found.is_empty(), "modules that import each other:\n{}", found.join("\n"));
    assert!(checked > 60, "read {checked} modules");
}

#[test]
fn the_checker_sees_a_cycle_through_braces_and_super() {
    let known: BTreeMap<String, PathBuf> = ["", "a", "b", "c", "c::d"].iter().map(|m| (m.to_string(), PathBuf::new())).collect();
    let a = references("a", &code("use crate::{b::Thing, c::d::f};\n// crate::c is only a comment\n"), &known);
    assert_eq!(a, ["b", "c::d"].iter().map(|s| s.to_string()).collect());
    let d = references("c::d", &code("fn f() { super::super::a::g() }\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n"), &known);
    assert_eq!(d, ["a"].iter().map(|s| s.to_string()).collect(), "tests are left out");
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", vec!["c::d"]), ("c::d", vec!["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "c::d".to_string()]]);
}

#[test]
fn every_crate_opens_with_its_role() {
    for dir in crates() {
        let lib = ["src/lib.rs", "src/main.rs"].iter().map(|f| dir.join(f)).find(|p| p.exists()).unwrap();
        let text = std::fs::read_to_string(&lib).unwrap();
        let doc: Vec<&str> = text.lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(doc.len() >= 2 || doc.first().is_some_and(|l| l.len() > 60), "{} has no opening paragraph on its role", lib.display());
    }
}
