//! The catalog: which images there are, and the tags their inputs give them.
//! Pure: it reads files (or a git tree, through [`tagging::Source`]), and
//! never reaches an engine, a registry, git or a process of its own.

pub mod by_arch;
pub mod context;
pub mod discovery;
pub mod dockerfile;
pub mod dockerignore;
pub mod shard;
pub mod tagging;
