//! `${VAR}` interpolation in YAML string values, so secrets live in the environment, not in files.
//!
//! Syntax: `${NAME}` (must be set), `${NAME:-default}` (default when unset or empty), `$${` for a literal `${`,
//! and `${file:PATH}` for the content of a secret file (a mounted Kubernetes Secret, say; relative to the config
//! file, trailing newline removed), which is watched like the config itself.
//! Interpolation happens on parsed values, so a secret containing YAML syntax cannot change the document's shape.

use serde_norway::Value;

/// Replaces variables in every string of `value`. `path` is the YAML path of `value`; errors name the path of the
/// string that referenced the missing variable.
pub(crate) fn interpolate(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String, String)>,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(new) => *s = new,
            Err(Unset(var)) => errors.push(match var.strip_prefix("file:") {
                Some(f) => (
                    path.clone(),
                    format!("cannot read the secret file {:?}", f.trim()),
                    "create the file, or fix the path (relative to this config file)".into(),
                ),
                None => (
                    path.clone(),
                    format!("environment variable {var:?} is not set"),
                    format!("export {var}=… before starting, or write ${{{var}:-default}}"),
                ),
            }),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate(item, path, lookup, errors);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                match k {
                    Value::String(k) => path.push_str(k),
                    other => path.push_str(&format!("{other:?}")),
                }
                interpolate(v, path, lookup, errors);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => interpolate(&mut t.value, path, lookup, errors),
        _ => {}
    }
}

/// The first variable of a string that is unset and has no default (`file:PATH` for a secret file).
#[derive(Debug, PartialEq, Eq)]
struct Unset(String);

/// Expands one string; `Err` names the first variable that is unset and has no default.
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Unset> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                out.push_str(after);
                return Ok(out);
            };
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(Unset(name.to_string())),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_defaults_and_escapes() {
        assert_eq!(expand("Bearer ${TOKEN}", &env).unwrap(), "Bearer s3cret");
        assert_eq!(expand("${MISSING:-x}-${EMPTY:-y}", &env).unwrap(), "x-y");
        assert_eq!(expand("$${TOKEN} costs $5", &env).unwrap(), "${TOKEN} costs $5");
        assert_eq!(expand("${MISSING}", &env).unwrap_err(), Unset("MISSING".into()));
    }

    #[test]
    fn errors_carry_yaml_path() {
        let mut v: Value = serde_norway::from_str("routes:\n  - name: a\n    key: ${NOPE}\n").unwrap();
        let mut errors = vec![];
        interpolate(&mut v, &mut String::new(), &env, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "routes[0].key");
        assert!(errors[0].1.contains("NOPE"));
    }
}
