//! The commands, one module each. They take resolved settings and plain
//! arguments; none imports another, nor the command line.

pub mod check;
pub mod gc;
pub mod images;
pub mod init;
pub mod listing;
pub mod prune;
pub mod status;
