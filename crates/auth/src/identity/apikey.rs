//! API keys: `mg_<id>_<secret>`, shown once at creation; the store keeps only the key's SHA-256 (the secret is 256
//! random bits, so a fast hash is safe and keeps the check to about a microsecond). A key is found by its id and
//! its hash compared in constant time. Several live keys per consumer let a key be rotated without downtime:
//! create the new one, move callers over, revoke the old one.
//!
//! The key file is YAML written by `modelgate keys` and watched by the gateway: a reload picks up new, revoked
//! and expired keys.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use modelgate_config::model::ConsumerConfig;
use modelgate_config::{ConfigError, HumanDuration};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use modelgate_pipeline::principal::{Method, Principal};

/// The key file as stored.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(default)]
    pub keys: Vec<StoredKey>,
}

/// One key's record: never the key itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    /// The key's public id (the part after `mg_`), shown in logs and the audit log.
    pub id: String,
    /// The consumer the key authenticates as.
    pub consumer: String,
    /// Hex SHA-256 of the whole key.
    pub sha256: String,
    /// Scopes granted to requests made with this key.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Groups the consumer belongs to, for policy rules.
    #[serde(default)]
    pub groups: Vec<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// RFC 3339 expiry; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// A revoked key is refused from the next reload on.
    #[serde(default)]
    pub revoked: bool,
    /// Registered by `modelgate keys import` (a key value the caller already had, e.g. from Kong): found by its
    /// hash rather than by an id inside the key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imported: bool,
}

/// Why a key was refused (for the audit log; the client only hears "invalid" or "expired").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFailure {
    Malformed,
    UnknownId,
    WrongSecret,
    Revoked,
    Expired,
}

/// The compiled store.
#[derive(Default)]
pub struct KeyStore {
    by_id: HashMap<Box<str>, Entry, foldhash::fast::RandomState>,
    /// Imported keys by the SHA-256 of the whole key (they carry no id).
    imported: HashMap<[u8; 32], Box<str>, foldhash::fast::RandomState>,
}

struct Entry {
    hash: [u8; 32],
    expires: Option<SystemTime>,
    revoked: bool,
    principal: Arc<Principal>,
}

// === impl KeyFailure ===

impl KeyFailure {
    /// Every failure, for docs checks.
    pub const ALL: [KeyFailure; 5] =
        [KeyFailure::Malformed, KeyFailure::UnknownId, KeyFailure::WrongSecret, KeyFailure::Revoked, KeyFailure::Expired];

    pub fn code(self) -> &'static str {
        match self {
            KeyFailure::Malformed => "api_key_malformed",
            KeyFailure::UnknownId => "api_key_unknown",
            KeyFailure::WrongSecret => "api_key_wrong_secret",
            KeyFailure::Revoked => "api_key_revoked",
            KeyFailure::Expired => "api_key_expired",
        }
    }
}

// === impl KeyStore ===

impl KeyStore {
    /// Loads a key file (a missing file is an empty store: keys are created into it later) and adds the keys of
    /// consumers declared in config; a declared consumer's groups are added to its file keys' groups too.
    pub fn load_with(path: &Path, declared: &BTreeMap<String, ConsumerConfig>) -> Result<KeyStore, ConfigError> {
        let mut store = Self::load_groups(path, declared)?;
        for (consumer, c) in declared {
            for hash in &c.key_hashes {
                let id: Box<str> = format!("cfg-{}", hex::encode(&hash[..6])).into();
                let principal = Arc::new(Principal::new(
                    Method::ApiKey,
                    id.to_string(),
                    consumer.clone(),
                    consumer.clone(),
                    c.scopes.clone(),
                    c.groups.clone(),
                ));
                if store.imported.insert(*hash, id.clone()).is_some() {
                    return Err(ConfigError::new(path, format!("identity.consumers.{consumer}.keys"), "this key is already in use"));
                }
                store.by_id.insert(id, Entry { hash: *hash, expires: None, revoked: false, principal });
            }
        }
        Ok(store)
    }

    /// Loads a key file; a missing file is an empty store (keys are created into it later).
    pub fn load(path: &Path) -> Result<KeyStore, ConfigError> {
        Self::load_groups(path, &BTreeMap::new())
    }

    fn load_groups(path: &Path, declared: &BTreeMap<String, ConsumerConfig>) -> Result<KeyStore, ConfigError> {
        let file = read_file(path)?;
        let mut by_id = HashMap::with_capacity_and_hasher(file.keys.len(), Default::default());
        let mut imported = HashMap::default();
        for (i, k) in file.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&k.sha256, &mut hash).map_err(|_| {
                ConfigError::new(path, format!("{at}.sha256"), "not a hex SHA-256")
                    .hint("the file is written by `modelgate keys`; do not edit hashes")
            })?;
            let expires = k
                .expires
                .as_deref()
                .map(|e| {
                    humantime::parse_rfc3339_weak(e)
                        .map_err(|_| ConfigError::new(path, format!("{at}.expires"), format!("{e:?} is not an RFC 3339 time")))
                })
                .transpose()?;
            let mut groups = k.groups.clone();
            if let Some(c) = declared.get(&k.consumer) {
                groups.extend(c.groups.iter().filter(|g| !k.groups.contains(g)).cloned());
            }
            let principal =
                Arc::new(Principal::new(Method::ApiKey, k.id.clone(), k.consumer.clone(), k.consumer.clone(), k.scopes.clone(), groups));
            if k.imported && imported.insert(hash, k.id.clone().into_boxed_str()).is_some() {
                return Err(ConfigError::new(path, format!("{at}.sha256"), "this imported key appears twice"));
            }
            if by_id.insert(k.id.clone().into_boxed_str(), Entry { hash, expires, revoked: k.revoked, principal }).is_some() {
                return Err(ConfigError::new(path, format!("{at}.id"), format!("key id {:?} appears twice", k.id)));
            }
        }
        Ok(KeyStore { by_id, imported })
    }

    /// Checks a presented key.
    pub fn check(&self, key: &str, now: SystemTime) -> Result<&Arc<Principal>, (KeyFailure, Option<&Arc<Principal>>)> {
        let (e, presented) = match parse_id(key).and_then(|id| self.by_id.get(id)) {
            Some(e) => (e, Sha256::digest(key.as_bytes()).into()),
            // Not one of ours by shape or id: an imported key, found by its hash (the map holds only hashes of
            // high-entropy keys, so looking one up reveals nothing a guess would not).
            None if !self.imported.is_empty() && (MIN_IMPORTED..=MAX_IMPORTED).contains(&key.len()) => {
                let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                let e = self.imported.get(&presented).and_then(|id| self.by_id.get(id)).ok_or((KeyFailure::UnknownId, None))?;
                (e, presented)
            }
            None if parse_id(key).is_some() => return Err((KeyFailure::UnknownId, None)),
            None => return Err((KeyFailure::Malformed, None)),
        };
        let presented: [u8; 32] = presented;
        if !bool::from(presented.ct_eq(&e.hash)) {
            return Err((KeyFailure::WrongSecret, None));
        }
        if e.revoked {
            return Err((KeyFailure::Revoked, Some(&e.principal)));
        }
        if e.expires.is_some_and(|t| now >= t) {
            return Err((KeyFailure::Expired, Some(&e.principal)));
        }
        Ok(&e.principal)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Shortest and longest key value `keys import` accepts: shorter ones could be guessed.
pub const MIN_IMPORTED: usize = 20;
pub const MAX_IMPORTED: usize = 512;

/// Registers key values callers already have (e.g. Kong `key-auth` credentials) for `consumer`, stored hashed; one
/// per line of `keys`. Returns the records. The file is replaced atomically.
pub fn import_in(path: &Path, consumer: &str, scopes: Vec<String>, groups: Vec<String>, keys: &[String]) -> anyhow::Result<Vec<StoredKey>> {
    let mut file = read_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let added = import_into(&mut file, path, consumer, &scopes, &groups, keys)?;
    write_file(path, &file)?;
    Ok(added)
}

/// [`import_in`] for several consumers at once (one read and one write of the file), e.g. a Kong import's.
pub fn import_consumers_in(path: &Path, consumers: &[(&str, &[String])]) -> anyhow::Result<usize> {
    let mut file = read_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut n = 0;
    for (consumer, keys) in consumers {
        n += import_into(&mut file, path, consumer, &[], &[], keys).map_err(|e| e.context(format!("consumer {consumer:?}")))?.len();
    }
    write_file(path, &file)?;
    Ok(n)
}

fn import_into(
    file: &mut KeyFile,
    path: &Path,
    consumer: &str,
    scopes: &[String],
    groups: &[String],
    keys: &[String],
) -> anyhow::Result<Vec<StoredKey>> {
    check_consumer(consumer)?;
    let mut added = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        anyhow::ensure!(
            (MIN_IMPORTED..=MAX_IMPORTED).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()),
            "key {} is not importable: {MIN_IMPORTED} to {MAX_IMPORTED} printable characters without spaces",
            i + 1
        );
        let sha256 = hex::encode(Sha256::digest(key.as_bytes()));
        anyhow::ensure!(!file.keys.iter().any(|k| k.sha256 == sha256), "key {} is already in {}", i + 1, path.display());
        let mut id = [0u8; 6];
        getrandom::fill(&mut id).map_err(|e| std::io::Error::other(e.to_string()))?;
        let stored = StoredKey {
            id: hex::encode(id),
            consumer: consumer.to_string(),
            sha256,
            scopes: scopes.to_vec(),
            groups: groups.to_vec(),
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            expires: None,
            revoked: false,
            imported: true,
        };
        file.keys.push(stored.clone());
        added.push(stored);
    }
    Ok(added)
}

fn check_consumer(consumer: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !consumer.is_empty() && consumer.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)),
        "consumer names are letters, digits and -_.@"
    );
    Ok(())
}

/// Is this string shaped like one of our keys (so a bearer token can be told from a JWT)?
pub fn looks_like_key(s: &str) -> bool {
    s.starts_with("mg_")
}

fn parse_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("mg_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() == 43).then_some(id)
}

fn read_file(path: &Path) -> Result<KeyFile, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyFile::default()),
        Err(e) => return Err(ConfigError::new(path, "", format!("cannot read the API key file: {e}"))),
    };
    let value: serde_norway::Value = serde_norway::from_str(&text).map_err(|e| ConfigError::new(path, "", format!("invalid YAML: {e}")))?;
    if value.is_null() {
        return Ok(KeyFile::default());
    }
    modelgate_config::from_owned_value(value, path, "")
}

/// A new key and its stored record. The key is returned once and never stored.
pub fn create(
    consumer: &str,
    scopes: Vec<String>,
    groups: Vec<String>,
    lifetime: Option<Duration>,
) -> std::io::Result<(String, StoredKey)> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).and_then(|_| getrandom::fill(&mut secret)).map_err(|e| std::io::Error::other(e.to_string()))?;
    let id = hex::encode(id);
    let key = format!("mg_{id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let now = SystemTime::now();
    let stored = StoredKey {
        id,
        consumer: consumer.to_string(),
        sha256: hex::encode(Sha256::digest(key.as_bytes())),
        scopes,
        groups,
        created: humantime::format_rfc3339_seconds(now).to_string(),
        expires: lifetime.map(|d| humantime::format_rfc3339_seconds(now + d).to_string()),
        revoked: false,
        imported: false,
    };
    Ok((key, stored))
}

/// Appends a new key to the file (created if missing) and returns the key. The file is replaced atomically.
pub fn create_in(
    path: &Path,
    consumer: &str,
    scopes: Vec<String>,
    groups: Vec<String>,
    lifetime: Option<HumanDuration>,
) -> anyhow::Result<(String, StoredKey)> {
    check_consumer(consumer)?;
    let mut file = read_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (key, stored) = create(consumer, scopes, groups, lifetime.map(|d| d.0))?;
    file.keys.push(stored.clone());
    write_file(path, &file)?;
    Ok((key, stored))
}

/// Marks a key revoked. Errors if the id is unknown.
pub fn revoke_in(path: &Path, id: &str) -> anyhow::Result<StoredKey> {
    let mut file = read_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let k = file.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| anyhow::anyhow!("no key with id {id:?} in {}", path.display()))?;
    k.revoked = true;
    let out = k.clone();
    write_file(path, &file)?;
    Ok(out)
}

/// The stored records.
pub fn list_in(path: &Path) -> anyhow::Result<Vec<StoredKey>> {
    Ok(read_file(path).map_err(|e| anyhow::anyhow!("{e}"))?.keys)
}

fn write_file(path: &Path, file: &KeyFile) -> anyhow::Result<()> {
    let mut text =
        String::from("# API keys of modelgate, written by `modelgate keys`. Hashes only: each key was shown once, at creation.\n");
    text.push_str(&serde_norway::to_string(file)?);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), text)?;
    tmp.persist(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_expire_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let (a, _) = create_in(&path, "team-a", vec!["digits:infer".into()], vec![], None).unwrap();
        let (b, sb) = create_in(&path, "team-a", vec![], vec![], Some(HumanDuration(Duration::from_secs(60)))).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&a[16..]), "the secret is never stored");
        let store = KeyStore::load(&path).unwrap();
        let now = SystemTime::now();
        let p = store.check(&a, now).unwrap();
        assert_eq!((p.consumer.as_str(), p.scopes.as_slice()), ("team-a", &["digits:infer".to_string()][..]));
        assert!(store.check(&b, now).is_ok(), "two live keys for one consumer");
        assert_eq!(store.check(&b, now + Duration::from_secs(61)).unwrap_err().0, KeyFailure::Expired);
        let mut wrong = a.clone();
        wrong.replace_range(20..21, if &a[20..21] == "x" { "y" } else { "x" });
        assert_eq!(store.check(&wrong, now).unwrap_err().0, KeyFailure::WrongSecret);
        assert_eq!(store.check("mg_000000000000_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", now).unwrap_err().0, KeyFailure::UnknownId);
        assert_eq!(store.check("hello", now).unwrap_err().0, KeyFailure::Malformed);
        revoke_in(&path, &sb.id).unwrap();
        let store = KeyStore::load(&path).unwrap();
        assert_eq!(store.check(&b, now).unwrap_err().0, KeyFailure::Revoked);
        assert!(store.check(&a, now).is_ok());
    }

    #[test]
    fn imported_keys_are_found_by_hash_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let (ours, _) = create_in(&path, "team-a", vec![], vec![], None).unwrap();
        let kong = "kong-key-0f8e2d1c9b7a65432100abcd".to_string();
        let stored = import_in(&path, "legacy", vec![], vec!["migrated".into()], std::slice::from_ref(&kong)).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&kong), "the key is never stored");
        assert!(import_in(&path, "legacy", vec![], vec![], std::slice::from_ref(&kong)).is_err(), "twice is refused");
        assert!(import_in(&path, "legacy", vec![], vec![], &["short".into()]).is_err(), "guessable keys are refused");
        let store = KeyStore::load(&path).unwrap();
        let now = SystemTime::now();
        let p = store.check(&kong, now).unwrap();
        assert_eq!(
            (p.consumer.as_str(), p.credential.as_str(), p.groups.as_slice()),
            ("legacy", stored[0].id.as_str(), &["migrated".to_string()][..])
        );
        assert!(store.check(&ours, now).is_ok(), "generated keys still work beside imported ones");
        let mut other = kong.clone();
        other.push('x');
        assert_eq!(store.check(&other, now).unwrap_err().0, KeyFailure::UnknownId);
        assert_eq!(store.check("hello", now).unwrap_err().0, KeyFailure::Malformed, "too short to be any key");
        revoke_in(&path, &stored[0].id).unwrap();
        assert_eq!(KeyStore::load(&path).unwrap().check(&kong, now).unwrap_err().0, KeyFailure::Revoked);
    }

    #[test]
    fn a_broken_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        std::fs::write(&path, "keys:\n- {id: abc, consumer: x, sha256: zz, created: now}\n").unwrap();
        let e = KeyStore::load(&path).err().unwrap();
        assert_eq!(e.path, "keys[0].sha256");
    }
}
