//! [`HeaderEdits`]: what plugins change on a request's headers before it goes upstream (identity headers set,
//! credentials removed, a session cookie cut out). Recorded rather than done, so both ways a decision is used get
//! the same changes from one place: the gateway applies them to the request it forwards, and `modelgate authz`
//! answers them to the proxy that asked (headers for it to set, names for it to remove).

use http::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// Changes to a request's headers in the order plugins made them; a later change of a name replaces an earlier
/// one. Small and on the stack: a request's few identity headers and removals allocate nothing here.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    set: SmallVec<[(HeaderName, HeaderValue); 6]>,
    remove: SmallVec<[HeaderName; 4]>,
}

impl HeaderEdits {
    /// Sets `name` to `value` alone: what the client sent under that name, and any earlier edit of it, goes.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.remove.retain(|n| *n != name);
        match self.set.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.set.push((name, value)),
        }
    }

    /// Removes every value of `name`, also one an earlier edit set.
    pub fn remove(&mut self, name: &HeaderName) {
        self.set.retain(|(n, _)| n != name);
        if !self.remove.contains(name) {
            self.remove.push(name.clone());
        }
    }

    /// Whether `name` is set.
    pub fn is_set(&self, name: &HeaderName) -> bool {
        self.set.iter().any(|(n, _)| n == name)
    }

    /// The names removed (and not set again afterwards).
    pub fn removed(&self) -> &[HeaderName] {
        &self.remove
    }

    /// The headers set, in the order first set.
    pub fn into_sets(self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        self.set.into_iter()
    }

    /// Makes the changes on `headers` (the request the gateway forwards).
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in self.set {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &'static str) -> HeaderName {
        HeaderName::from_static(n)
    }

    #[test]
    fn a_later_edit_of_a_name_wins() {
        let edits = || {
            let mut e = HeaderEdits::default();
            e.set(name("x-a"), HeaderValue::from_static("1"));
            e.remove(&name("x-a"));
            e.remove(&name("x-b"));
            e.set(name("x-b"), HeaderValue::from_static("2"));
            e.set(name("x-c"), HeaderValue::from_static("3"));
            e.set(name("x-c"), HeaderValue::from_static("4"));
            e.remove(&name("x-d"));
            e.remove(&name("x-d"));
            e
        };
        let e = edits();
        assert_eq!(e.removed(), [name("x-a"), name("x-d")]);
        assert!(e.is_set(&name("x-b")) && !e.is_set(&name("x-a")));
        assert_eq!(e.into_sets().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect::<Vec<_>>(), ["x-b=2", "x-c=4"]);

        let mut h = HeaderMap::new();
        for (n, v) in [("x-a", "client"), ("x-b", "client"), ("x-b", "twice"), ("x-d", "client"), ("x-e", "kept")] {
            h.append(name(n), HeaderValue::from_static(v));
        }
        edits().apply(&mut h);
        let mut got: Vec<_> = h.iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect();
        got.sort();
        assert_eq!(got, ["x-b=2", "x-c=4", "x-e=kept"], "set replaces every value the client sent");
    }
}
