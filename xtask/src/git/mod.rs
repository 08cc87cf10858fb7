//! Git: the images directory at past revisions, read from git's objects
//! (`--changed-since`, `gc`'s reachable tags), and the provenance labels of
//! a build.

pub mod history;
pub mod provenance;
mod repo;
mod source;

pub use history::{changed_since, History, Snapshot};
pub use repo::{Oid, Repo};
