//! Registry: the OCI distribution API, spoken directly, for everything that
//! reads or writes manifests (existence, platforms, retags, indexes), with
//! the engine's own credentials; and how registry failures are told apart
//! and retried, for these calls and the engine's pulls and pushes alike.

mod auth;
mod blobs;
mod client;
mod exchange;
mod failure;
mod listing;
mod transport;

pub use auth::Credentials;
pub use client::{digest_of, Manifest, Member, Registry};
pub use failure::{cli_error, is_transient, registry_of, RegistryError, Retry, QUICK_RETRY_DELAYS, RETRY_DELAYS};
pub use transport::{is_loopback, Transport};
