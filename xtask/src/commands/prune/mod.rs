//! `prune`: removes the local images of catalog images whose tag is no
//! longer current, under their local names (`<LOCAL_IMAGE_PREFIX>/<path>:<tag>`)
//! and their remote names (`<REMOTE_IMAGE_PREFIX>/<path>_<arch>:<tag>`). The
//! current tags and one look at the engine (its images and containers) make
//! a plan, which `--dry-run` prints; the run removes what it lists.
//!
//! `command.rs` runs it as gather, plan (`plan.rs`, pure), execute and
//! report (`text.rs`).

mod command;
mod plan;
mod text;

pub use self::command::{prune, run};
pub use self::plan::{freed, names_of_catalog_images, plan, Current, Name, NameAction, Removal};
pub use self::text::report;
