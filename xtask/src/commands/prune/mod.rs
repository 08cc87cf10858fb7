//! `prune`: removes the local images of catalog images whose tag is no
//! longer current, under their local names (`<LOCAL_IMAGE_PREFIX>/<path>:<tag>`)
//! and their remote names (`<REMOTE_IMAGE_PREFIX>/<path>_<arch>:<tag>`). The
//! current tags and one look at the engine (its images and containers) make
//! a plan, which `--dry-run` prints; the run removes what it lists.
//!
//! A tag stays while some checkout of the repository gives it: this work
//! tree, HEAD, a local branch head or another work tree (`git worktree`),
//! so that one checkout does not remove what another one loaded on the same
//! engine. Names under other prefixes count when asked for
//! (`--other-prefixes`); otherwise the images they keep are named.
//!
//! `command.rs` runs it as gather (`keep.rs`: what other checkouts keep),
//! plan (`plan.rs`, pure), execute and report (`text.rs`).

mod command;
mod keep;
mod plan;
mod text;

pub use self::command::{prune, run, PruneOptions, Pruned};
pub use self::plan::{freed, held, names_of_catalog_images, plan, Current, Elsewhere, Held, Name, NameAction, Removal};
pub use self::text::{held_note, report};
