//! docs/config.md is checked against the config structs: every field of every struct is documented in the
//! section tagged with the struct's name, and every documented field exists.

use std::collections::{BTreeMap, BTreeSet};

/// Field names (as written in YAML) of `#[derive(Deserialize)]` structs in a Rust source file.
fn structs(src: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut derive_seen = false;
    let mut rename: Option<String> = None;
    for line in src.lines().map(str::trim) {
        if line.starts_with("#[derive(") && line.contains("Deserialize") {
            derive_seen = true;
        } else if let Some(rest) = line.strip_prefix("pub struct ") {
            if derive_seen && rest.ends_with('{') {
                current = Some(rest.trim_end_matches('{').trim().to_string());
                out.insert(current.clone().unwrap(), BTreeSet::new());
            }
            derive_seen = false;
        } else if line.starts_with("pub enum ") || line.starts_with("enum ") {
            derive_seen = false;
        } else if line.starts_with("#[serde(rename = \"") {
            rename = line.split('"').nth(1).map(String::from);
        } else if line == "}" {
            current = None;
        } else if let (Some(s), Some(field)) = (&current, line.strip_prefix("pub "))
            && let Some((name, _)) = field.split_once(':')
        {
            out.get_mut(s).unwrap().insert(rename.take().unwrap_or_else(|| name.to_string()));
        }
    }
    out
}

/// Field names per `<!-- Struct -->` section of the docs.
fn documented(md: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        if line.starts_with('#') {
            current = line.split("<!-- ").nth(1).map(|s| s.trim_end_matches(" -->").trim().to_string());
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
        } else if let (Some(c), Some(rest)) = (&current, line.strip_prefix("| `")) {
            let name = rest.split('`').next().unwrap().to_string();
            out.get_mut(c).unwrap().insert(name);
        }
    }
    out
}

#[test]
fn config_reference_matches_the_code() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut code = BTreeMap::new();
    // The main schema and every plugin's settings (each plugin file holds its config structs): the gateway's own
    // plugins, and those of the auth and limits crates.
    let mut files = vec![std::path::PathBuf::from(format!("{root}/crates/config/src/raw.rs"))];
    for entry in std::fs::read_dir(format!("{root}/crates/gateway/src/plugins")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "mod.rs") {
            files.push(path);
        }
    }
    for plugin in ["auth/src/authenticate.rs", "auth/src/policy.rs", "limits/src/rate_limit.rs", "limits/src/concurrency.rs"] {
        files.push(format!("{root}/crates/{plugin}").into());
    }
    for file in files {
        code.extend(structs(&std::fs::read_to_string(file).unwrap()));
    }
    assert!(code.len() >= 13, "parsed too few config structs: {code:?}");
    let docs = documented(&std::fs::read_to_string(format!("{root}/docs/config.md")).unwrap());
    for (s, fields) in &code {
        let Some(doc_fields) = docs.get(s) else { panic!("docs/config.md has no section tagged <!-- {s} -->") };
        assert_eq!(fields, doc_fields, "fields of {s}: code (left) vs docs/config.md (right)");
    }
    for s in docs.keys() {
        assert!(code.contains_key(s), "docs/config.md documents {s}, which is not a config struct");
    }
}

/// docs/troubleshooting.md names every audit reason the gateway writes for a refused credential, with its cause
/// and fix.
#[test]
fn troubleshooting_names_every_refusal_reason() {
    use modelgate_auth::identity::{apikey::KeyFailure, aws::AwsFailure, jwt::JwtFailure};
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/troubleshooting.md")).unwrap();
    let codes = KeyFailure::ALL
        .iter()
        .map(|f| f.code())
        .chain(JwtFailure::ALL.iter().map(|f| f.code()))
        .chain(AwsFailure::ALL.iter().map(|f| f.code()));
    let fixed = ["missing_credentials", "authenticated", "no_rule_matched", "no_principal", "client_cert_without_name"];
    for code in codes.chain(fixed) {
        assert!(doc.contains(&format!("| `{code}` |")), "docs/troubleshooting.md does not explain {code:?}");
    }
}

/// docs/config.schema.json is what `modelgate schema` prints (regenerate it with `modelgate schema >
/// docs/config.schema.json`), every example config is valid against it, and a typo is not.
#[test]
fn the_json_schema_is_current_and_accepts_the_examples() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(modelgate_test_support::bin()).arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/config.schema.json")).unwrap()).unwrap();
    assert!(printed == committed, "docs/config.schema.json is stale: run `modelgate schema > docs/config.schema.json`");
    let validator = jsonschema::validator_for(&committed).unwrap();
    let mut files: Vec<_> = ["examples/gateway.yaml", "examples/up.yaml"].iter().map(|f| root.join(f)).collect();
    files.extend(std::fs::read_dir(root.join("examples/idp")).unwrap().map(|e| e.unwrap().path()));
    for f in &files {
        let doc: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
    }
    let typo: serde_json::Value = serde_norway::from_str("listen: 127.0.0.1:0\nupstreamz: {}\n").unwrap();
    assert!(!validator.is_valid(&typo), "unknown top-level fields are refused");
}
