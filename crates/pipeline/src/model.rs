//! The model and version a request addresses, read from its normalized path. Shared by policy, limits keyed by
//! model, tensor validation, metrics and the audit log.

/// The model and version a request path targets, in OIP v2 or TorchServe form.
pub fn model_target(path: &str) -> (Option<&str>, Option<&str>) {
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
    }
}
