//! Git: the images directory at past revisions, read from git's objects
//! (`--changed-since`, `gc`'s reachable tags), the branch heads and work
//! trees other checkouts hold it at (`prune`), the provenance labels of a
//! build, and the source date a reproducible build is stamped with
//! (`verify`).

pub mod checkouts;
pub mod epoch;
pub mod history;
pub mod provenance;
mod repo;
mod source;

pub use checkouts::{Checkouts, Worktree};
pub use epoch::{DateFrom, SourceDate, SourceDates};
pub use history::{changed_since, History, Snapshot};
pub use repo::{Oid, Repo};
