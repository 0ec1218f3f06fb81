//! Who may call what: the authenticate and authorize phases.
//!
//! - [`identity`]: API keys, OIDC/JWT issuers, AWS IAM (STS), key revocations, signed identity assertions; the
//!   services outlive config snapshots where that keeps caches (JWKS) warm.
//! - [`authenticate`]: the `auth` plugin (authenticate phase; identity headers and assertions in the proxy step).
//! - [`policy`]: the `policy` plugin (authorize phase): default-deny allow rules over the principal and the model
//!   and version the request targets, every decision audited.
//! - [`glob`]: the `*`-patterns both use.
//!
//! Depends on `pipeline` (the `Plugin` trait, `Ctx`, `Principal`, errors) and below; the gateway registers the two
//! plugins.

#![deny(unsafe_code)]

pub mod authenticate;
pub mod glob;
pub mod identity;
pub mod policy;
