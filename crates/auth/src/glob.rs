//! `*`-globs over names (models, versions, consumers, claims, AWS ARNs), compiled once into their literal parts.

/// `*`-glob, compiled into its literal parts.
pub struct Pattern {
    parts: Vec<String>,
    exact: bool,
}

// === impl Pattern ===

impl Pattern {
    pub fn new(s: &str) -> Pattern {
        Pattern { parts: s.split('*').map(String::from).collect(), exact: !s.contains('*') }
    }

    pub fn matches(&self, s: &str) -> bool {
        if self.exact {
            return self.parts[0] == s;
        }
        let (first, last) = (&self.parts[0], &self.parts[self.parts.len() - 1]);
        if !s.starts_with(first.as_str()) || s.len() < first.len() + last.len() || !s.ends_with(last.as_str()) {
            return false;
        }
        let mut rest = &s[first.len()..s.len() - last.len()];
        for mid in &self.parts[1..self.parts.len() - 1] {
            match rest.find(mid.as_str()) {
                Some(i) => rest = &rest[i + mid.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::new("team-*-prod");
        assert!(p.matches("team-a-prod") && p.matches("team--prod") && !p.matches("team-a-dev") && !p.matches("team-prod"));
        assert!(Pattern::new("*").matches("") && Pattern::new("a").matches("a") && !Pattern::new("a").matches("ab"));
        assert!(Pattern::new("a*b*c").matches("axxbyyc") && !Pattern::new("a*b*c").matches("acb"));
    }
}
