//! Git: the images directory at past revisions, read from git's objects
//! (`--changed-since`, `gc`'s reachable tags), the branch heads and work
//! trees other checkouts hold it at (`prune`), and the provenance labels of
//! a build.

pub mod checkouts;
pub mod history;
pub mod provenance;
mod repo;
mod source;

pub use checkouts::{Checkouts, Worktree};
pub use history::{changed_since, History, Snapshot};
pub use repo::{Oid, Repo};
