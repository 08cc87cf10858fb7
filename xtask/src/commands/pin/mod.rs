//! `pin`: every external base of the Dockerfiles (`FROM`, `COPY --from`,
//! and the `ARG` defaults a `FROM` names) pinned to the digest its tag
//! points at in its registry; `--update` moves pinned ones, `--check`
//! tells which are unpinned or have drifted.

mod command;
mod resolve;
mod rewrite;

pub use command::{run, BaseState, PinMode, Row};
