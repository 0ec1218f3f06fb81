//! The model and version a request addresses, read from its normalized path. Shared by policy, limits keyed by
//! model, tensor validation, metrics and the audit log.

/// The model and version a request path targets, in OIP v2 or TorchServe form. Byte scans, no splitter: every
/// request that names a model asks this a few times (policy, limits, metrics).
pub fn model_target(path: &str) -> (Option<&str>, Option<&str>) {
    let path = path.trim_start_matches('/');
    if let Some(rest) = path.strip_prefix("v2/models/") {
        let (model, rest) = segment(rest);
        if model.is_empty() {
            return (None, None);
        }
        let version = rest.and_then(|r| r.strip_prefix("versions/")).map(|r| segment(r).0).filter(|v| !v.is_empty());
        return (Some(model), version);
    }
    if let Some(rest) = path.strip_prefix("predictions/") {
        let (model, rest) = segment(rest);
        if !model.is_empty() {
            return (Some(model), rest.map(|r| segment(r).0).filter(|v| !v.is_empty()));
        }
    }
    (None, None)
}

/// The path's first segment and what follows its `/`, if one does.
fn segment(path: &str) -> (&str, Option<&str>) {
    match path.bytes().position(|b| b == b'/') {
        Some(i) => (&path[..i], Some(&path[i + 1..])),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(model_target("/v2/models/digits/infer"), (Some("digits"), None));
        assert_eq!(model_target("/v2/models/digits/versions/2/infer"), (Some("digits"), Some("2")));
        assert_eq!(model_target("/v2/models/digits"), (Some("digits"), None));
        assert_eq!(model_target("/predictions/digits/3"), (Some("digits"), Some("3")));
        assert_eq!(model_target("/v2/health/ready"), (None, None));
        assert_eq!(model_target("//v2/models/digits/versions/"), (Some("digits"), None));
        assert_eq!(model_target("/v2/models/digits/versions"), (Some("digits"), None));
        assert_eq!(model_target("/v2/models/digits/versionsx/2"), (Some("digits"), None));
        assert_eq!(model_target("/v2/models/"), (None, None));
        assert_eq!(model_target("/v2/models"), (None, None));
        assert_eq!(model_target("/predictions/digits"), (Some("digits"), None));
        assert_eq!(model_target("/predictions/digits/3/extra"), (Some("digits"), Some("3")));
        assert_eq!(model_target("/predictions/"), (None, None));
        assert_eq!(model_target("/predictions"), (None, None));
    }

    /// The byte scan answers as the plain splitter it replaced, on every path built from these segments.
    #[test]
    fn same_as_splitting() {
        fn split(path: &str) -> (Option<&str>, Option<&str>) {
            let mut segs = path.trim_start_matches('/').split('/');
            match (segs.next(), segs.next(), segs.next()) {
                (Some("v2"), Some("models"), Some(m)) if !m.is_empty() => {
                    let v = match (segs.next(), segs.next()) {
                        (Some("versions"), Some(v)) if !v.is_empty() => Some(v),
                        _ => None,
                    };
                    (Some(m), v)
                }
                (Some("predictions"), Some(m), v) if !m.is_empty() => (Some(m), v.filter(|v| !v.is_empty())),
                _ => (None, None),
            }
        }
        let segs = ["", "v2", "models", "predictions", "versions", "m", "2", "infer"];
        let mut paths = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = paths.iter().flat_map(|p| segs.iter().map(move |s| format!("{p}/{s}"))).collect();
            paths.extend(longer);
        }
        for p in &paths {
            assert_eq!(model_target(p), split(p), "{p}");
            assert_eq!(model_target(&p[1.min(p.len())..]), split(&p[1.min(p.len())..]), "{p}");
        }
    }
}
