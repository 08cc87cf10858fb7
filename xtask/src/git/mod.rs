//! Git: the trees of the images directory at past revisions (`--changed-since`,
//! `gc`'s reachable tags) and the provenance labels of a build.

pub mod history;
pub mod provenance;
