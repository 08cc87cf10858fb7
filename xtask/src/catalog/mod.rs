//! The catalog: which images there are, and the tags their inputs give them.
//! Pure: it reads files (or a git tree, through [`tagging::Source`]), and
//! never reaches an engine, a registry, git or a process of its own. What it
//! reads is the repository's and may be anything: it is bounded as it is
//! read ([`image_files`]), and quoted escaped in messages.

pub mod bases;
pub mod by_arch;
pub mod context;
pub mod discovery;
pub mod dockerfile;
pub mod dockerignore;
pub mod image_files;
pub mod shard;
pub mod tagging;
