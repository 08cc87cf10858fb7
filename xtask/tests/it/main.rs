//! Every integration test, in one binary: the tool's commands against real
//! engines and registries, its catalog and tags against the legacy
//! pipelines, the fault suite, the registry client against hostile
//! servers of the tests' own (`hostile`), and the repository rules that
//! read the workspace's own README and Makefile (`tidy`). Tests are selected by module
//! (`cargo nextest run -E 'test(/^engine::/)'`); `tests/run` says which
//! suites run on which builder.
//!
//! Shared: `support`, the one harness (the environment the built binary
//! starts from, the runners and the `Run` they give back, per-test
//! sandboxes against the test engine and registry, sealed ones for the
//! fault suite, registries of a test's own), `common` (trees of images and
//! settings, and their generator, for the catalog and make tests) and `rng`
//! (the seeded random numbers).

mod common;
mod rng;
mod support;

mod bases;
mod catalog;
mod check;
mod checkouts;
mod cross;
mod default_image;
mod engine;
mod faults;
mod history;
mod hostile;
mod insight;
mod launch;
mod lifecycle;
mod make;
mod pin;
mod props;
mod registry;
mod tidy;
mod untrusted;
mod verify;
