//! The console's sessions: sealed cookies (AES-256-GCM, so a cookie can be neither read nor altered) that name a
//! session held here, so logging out ends it at once whoever still holds the cookie.

#![allow(clippy::disallowed_methods, reason = "session expiry is wall-clock time compared with the cookie's, never a timer")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use modelgate_pipeline::principal::Principal;

/// The session cookie (path `/`: the console's pages and the admin API it calls).
pub const SESSION_COOKIE: &str = "mg_console";
/// The login-in-progress cookie: state, nonce and PKCE verifier of one authorization request.
pub const LOGIN_COOKIE: &str = "mg_login";
/// Sessions held at once; only people the IdP signed in (and the admin rules allowed) get one.
const MAX_SESSIONS: u64 = 10_000;
/// The longest `session_lifetime` allowed.
const LONGEST: Duration = Duration::from_secs(7 * 86400);

/// A signed-in person.
pub struct Session {
    pub principal: Arc<Principal>,
    /// Sent back in `x-csrf-token` (or the `csrf` form field) with every state-changing call.
    pub csrf: String,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

/// The sessions of this process and the key that seals cookies without a configured secret.
pub struct Sessions {
    held: moka::sync::Cache<String, Arc<Session>>,
    /// Used when `admin.console.cookie_secret` is unset: logins then end at a restart.
    random_key: [u8; 32],
    rng: SystemRandom,
}

impl Default for Sessions {
    fn default() -> Sessions {
        let rng = SystemRandom::new();
        let mut random_key = [0u8; 32];
        rng.fill(&mut random_key).expect("the system's random source");
        Sessions { held: moka::sync::Cache::builder().max_capacity(MAX_SESSIONS).time_to_live(LONGEST).build(), random_key, rng }
    }
}

impl Sessions {
    /// `n` random bytes, base64url.
    pub fn random(&self, n: usize) -> String {
        let mut b = vec![0u8; n];
        self.rng.fill(&mut b).expect("the system's random source");
        URL_SAFE_NO_PAD.encode(b)
    }

    fn key(&self, secret: Option<&str>) -> LessSafeKey {
        let bytes: [u8; 32] = match secret {
            Some(s) => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                ctx.update(b"modelgate console cookies v1\0");
                ctx.update(s.as_bytes());
                ctx.finish().as_ref().try_into().expect("32 bytes")
            }
            None => self.random_key,
        };
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte key"))
    }

    /// `plain` sealed for the cookie `name` (the name is authenticated too: one cookie cannot stand for another).
    pub fn seal(&self, secret: Option<&str>, name: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system's random source");
        let mut data = plain.to_vec();
        self.key(secret)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut data)
            .expect("sealing fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// What [`Sessions::seal`] sealed, if `sealed` is intact and was sealed for `name` with this key.
    pub fn open(&self, secret: Option<&str>, name: &str, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > 4096 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let mut data = data.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.key(secret).open_in_place(nonce, Aad::from(name.as_bytes()), &mut data).ok()?;
        Some(plain.to_vec())
    }

    /// Starts a session; the id goes in the sealed cookie.
    pub fn start(&self, principal: Arc<Principal>, lifetime: Duration) -> (String, Arc<Session>) {
        let id = self.random(32);
        let session = Arc::new(Session { principal, csrf: self.random(32), expires: now() + lifetime.as_secs() });
        self.held.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.held.get(id)?;
        if s.expires <= now() {
            self.held.invalidate(id);
            return None;
        }
        Some(s)
    }

    /// Ends a session (logout): its cookie opens nothing from now on.
    pub fn end(&self, id: &str) {
        self.held.invalidate(id);
    }

    /// Sessions held (for tests and the status view).
    pub fn count(&self) -> u64 {
        self.held.run_pending_tasks();
        self.held.entry_count()
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_cookies_open_only_intact_under_their_name_and_key() {
        let s = Sessions::default();
        let sealed = s.seal(Some("a-secret-of-at-least-thirty-two-chars"), SESSION_COOKIE, b"id-1");
        assert!(!sealed.contains("id-1"), "encrypted, not only signed");
        assert_eq!(s.open(Some("a-secret-of-at-least-thirty-two-chars"), SESSION_COOKIE, &sealed).as_deref(), Some(&b"id-1"[..]));
        assert_eq!(s.open(Some("another-secret-of-at-least-thirty-two"), SESSION_COOKIE, &sealed), None, "other key");
        assert_eq!(s.open(Some("a-secret-of-at-least-thirty-two-chars"), LOGIN_COOKIE, &sealed), None, "other cookie");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(s.open(Some("a-secret-of-at-least-thirty-two-chars"), SESSION_COOKIE, &URL_SAFE_NO_PAD.encode(bytes)), None, "altered");
        assert_eq!(s.open(None, SESSION_COOKIE, "not base64 !"), None);
        // Without a secret the process's random key seals; another process (another key) cannot open it.
        let other = Sessions::default();
        let local = s.seal(None, SESSION_COOKIE, b"x");
        assert!(s.open(None, SESSION_COOKIE, &local).is_some());
        assert!(other.open(None, SESSION_COOKIE, &local).is_none());
    }

    #[test]
    fn a_session_ends_at_logout_and_cookies_are_found_among_others() {
        let s = Sessions::default();
        let (id, session) = s.start(Arc::new(Principal::anonymous()), Duration::from_secs(60));
        assert!(s.get(&id).is_some());
        assert_eq!(session.csrf.len(), 43);
        s.end(&id);
        assert!(s.get(&id).is_none());
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; mg_console=abc".parse().unwrap());
        h.append(http::header::COOKIE, "mg_login=def".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("def"));
        assert_eq!(cookie(&h, "mg"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
