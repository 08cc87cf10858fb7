//! `verify`: does an image rebuild the same? Each image is built twice
//! from nothing, with `SOURCE_DATE_EPOCH` at its source date, and the two
//! results are compared: their configs, less what only records when the
//! build ran, and every entry of every layer, read from the archives the
//! engine streams.
//!
//! `command.rs` runs it: the images chosen (`select.rs`), built as a pair
//! (`pair.rs`), each archive summarised as it streams (`archive.rs`),
//! compared (`compare.rs`), with what rewriting file times would do
//! (`timestamps.rs`), and reported (`text.rs`, `json.rs`).

mod archive;
mod command;
mod compare;
mod json;
mod pair;
mod select;
mod text;
mod timestamps;

pub use self::command::{run, VerifyOptions};
pub use self::compare::BUILD_TIME_FIELDS;
pub use self::select::Selection;
