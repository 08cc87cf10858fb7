//! `gc`: deletes from the registry the tags of catalog repositories
//! (`<REMOTE_IMAGE_PREFIX>/<path>_<arch>`) that are the tag of no image at
//! the git revisions to keep. Tags at those revisions come from git's
//! objects (see [`crate::git::history`]); the registry is read over the
//! distribution API (`_catalog`, `tags/list`, manifests), and manifests are
//! deleted by digest. Blob storage is the registry's own garbage
//! collector's to free.
//!
//! `command.rs` runs it as gather (`keep.rs`: what the revisions to keep
//! give; `read.rs`: what the registry holds), plan (`plan.rs`, pure),
//! execute (`delete.rs`) and report (`text.rs`).

mod command;
mod delete;
mod keep;
mod plan;
mod read;
mod text;

pub use self::command::{run, GcOptions};
pub use self::keep::{parse_age, Kept};
pub use self::plan::{held, plan, Decision, Repository, Tag, TagAction};
pub use self::text::report;
