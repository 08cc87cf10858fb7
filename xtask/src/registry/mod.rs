//! Registry: the OCI distribution API, spoken directly, for everything that
//! reads or writes manifests (existence, platforms, retags, indexes,
//! listings), with the engine's own credentials, which go only to the
//! registry itself; every answer bounded in size and time and checked
//! against its digest; and how registry failures are told apart and
//! retried, for these calls and the engine's pulls and pushes alike.

mod auth;
mod blobs;
mod client;
mod exchange;
mod failure;
mod limits;
mod listing;
mod parallel;
mod transport;

pub use auth::Credentials;
pub use client::{digest_of, Manifest, Member, Registry};
pub use failure::{cli_error, is_transient, registry_of, RegistryError, Retry, QUICK_RETRY_DELAYS, RETRY_DELAYS};
pub use limits::{
    DEADLINE_VARIABLE, MAX_DOCUMENT_BYTES, MAX_ENTRIES, MAX_MANIFEST_BYTES, MAX_PAGES, MAX_REDIRECTS, MIN_BLOB_RATE,
    REQUEST_DEADLINE,
};
pub use parallel::each;
pub use transport::{is_loopback, Transport};
