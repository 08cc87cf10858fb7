//! The events a run sends while it works: the scheduler, the engine and the
//! registry client tell them; the reporter shows them. Neither side imports
//! the other.

use super::Outcome;

/// What a run tells while it works.
#[derive(Debug)]
pub enum Event<'a> {
    /// Work on an image began.
    Started(&'a str),
    /// An image is done with, one way or another.
    Finished(&'a Outcome),
    /// A line worth showing now: a fallback taken, a name moved.
    Note(String),
    /// A failed call (to a registry, or an engine's pull or push) is about
    /// to be tried again: what failed, and when the next try is.
    Retrying(String),
    /// A build of `image` began a step of its Dockerfile (`3/7`), as the
    /// builder's output said.
    Step { image: &'a str, step: &'a str },
    /// Under `--verbose`: an engine call's command line, or a line of its
    /// output, for `image` (`None`: a call for no one image).
    Echo { image: Option<&'a str>, line: &'a str },
}

/// Receives a run's events, from any of its threads.
pub trait Observer: Send + Sync {
    fn event(&self, event: Event<'_>);
}
