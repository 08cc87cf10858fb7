//! Registry failures: what went wrong, told apart by what it means for the
//! caller (worth another try, nothing listening, or neither), whether the
//! registry said it over HTTP or an engine CLI said it in text; and the
//! retry policy that acts on it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::model::{excerpt, Event, Observer, Reference};
use crate::process::{first_line, Interrupt};

use super::transport::is_loopback;

/// A registry call that failed: `transient` failures are worth another try
/// (after `retry_after`, when the registry said); `refused` means nothing
/// listens at a registry on another host, which is worth a few seconds
/// only (on loopback it is no failure worth another try); `stalled`,
/// that a request ran past its deadline, which is worth one more try.
#[derive(Debug)]
pub struct RegistryError {
    message: String,
    pub transient: bool,
    pub refused: bool,
    pub stalled: bool,
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RegistryError {}

pub(super) fn failure(message: String, transient: bool) -> anyhow::Error {
    anyhow::Error::new(RegistryError { message, transient, refused: false, stalled: false, retry_after: None })
}

pub(super) fn refused(registry: &str, what: &dyn std::fmt::Display, why: &str) -> anyhow::Error {
    failure(
        format!("registry {registry} refused the credentials for {what} ({why}): run `docker login {registry}`"),
        false,
    )
}

/// A request that ran past its deadline: the registry is stalled, or
/// sends its answer too slowly to be waited for.
pub(super) fn stalled(registry: &str, what: &dyn std::fmt::Display, deadline: Duration) -> anyhow::Error {
    anyhow::Error::new(RegistryError {
        message: format!(
            "registry {registry} did not answer about {what} within {} (the deadline of one request): it is stalled \
             or too slow",
            super::limits::seconds(deadline)
        ),
        transient: true,
        refused: false,
        stalled: true,
        retry_after: None,
    })
}

/// A status the caller did not expect, told by its code alone.
pub(super) fn status_error(r: &Reference, code: u16, response: &ureq::Response) -> anyhow::Error {
    let registry = &r.host;
    match code {
        401 => refused(registry, r, "401 Unauthorized"),
        403 => failure(
            format!(
                "registry {registry} refused access to {r} (403 Forbidden): the login lacks permission for {}",
                r.repository
            ),
            false,
        ),
        429 | 500..=599 => {
            let retry_after =
                response.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
            anyhow::Error::new(RegistryError {
                message: format!("registry {registry} failed: {code} {} for {r}", excerpt(response.status_text())),
                transient: true,
                refused: false,
                stalled: false,
                retry_after,
            })
        }
        _ => failure(format!("registry {registry} answered {code} {} for {r}", excerpt(response.status_text())), false),
    }
}

/// A request that failed before any answer. `at_registry`: it went to the
/// registry's own origin (not to where a redirect or a challenge led).
pub(super) fn transport_error(registry: &str, t: &ureq::Transport, at_registry: bool) -> anyhow::Error {
    use ureq::ErrorKind::*;
    let said = t.to_string();
    let lower = said.to_lowercase();
    let refused = t.kind() == ConnectionFailed && lower.contains("refused");
    let (message, transient) = match t.kind() {
        // A refusal on this machine is no registry starting or restarting
        // elsewhere: nothing listens there, and waiting changes nothing.
        _ if refused && at_registry && is_loopback(registry) => {
            (format!("no registry at {registry} (nothing listens there)"), false)
        }
        Dns => (format!("registry {registry} is not reachable: no such host ({said})"), false),
        InvalidUrl | UnknownScheme => (format!("registry {registry}: {said}"), false),
        _ if lower.contains("certificate") || lower.contains("tls") => (
            format!(
                "registry {registry}: TLS failed ({said}): put its CA in /etc/docker/certs.d/{registry}/ca.crt, or \
                 list it in insecure_registries if it speaks plain HTTP"
            ),
            false,
        ),
        _ => (format!("registry {registry} is not reachable: {said}"), true),
    };
    anyhow::Error::new(RegistryError { message, transient, refused, stalled: false, retry_after: None })
}

/// Turns what an engine CLI said about a failed registry call into a
/// [`RegistryError`] (the engine's pulls and pushes only speak text).
pub fn cli_error(reference: &str, stderr: &str) -> anyhow::Error {
    let registry = registry_of(reference);
    let lower = stderr.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let (message, transient) = if has(&["manifest unknown", "not found", "no such manifest"]) {
        (format!("the registry has no {reference}"), false)
    } else if has(&["connection refused"]) && is_loopback(reference) {
        // As for the client's own requests: on loopback, no registry.
        (format!("no registry at {registry} (nothing listens there)"), false)
    } else if has(&[
        "connection refused",
        "i/o timeout",
        "connection reset",
        "eof",
        "broken pipe",
        "timeout",
        "use of closed network connection",
    ]) {
        (format!("registry {registry} is not reachable: {}", first_line(stderr)), true)
    } else if has(&["no such host"]) {
        (format!("registry {registry} is not reachable: {}", first_line(stderr)), false)
    } else if has(&["unauthorized", "authentication required", "denied", "no basic auth credentials"]) {
        (format!("registry {registry} refused the credentials for {reference}: run `docker login {registry}`"), false)
    } else if has(&[
        "toomanyrequests",
        "429 too many",
        "500 internal",
        "502 bad",
        "503 service",
        "504 gateway",
        "status: 5",
        "status code 5",
    ]) {
        (format!("registry {registry} failed: {}", first_line(stderr)), true)
    } else if has(&["blob unknown", "blob upload unknown"]) {
        // Another push of the same layers, from this engine or another, was
        // under way: the next try finds them there.
        (format!("registry {registry} lost a layer of a push under way: {}", first_line(stderr)), true)
    } else {
        (format!("{reference}: {}", first_line(stderr)), false)
    };
    let refused = transient && lower.contains("connection refused");
    anyhow::Error::new(RegistryError { message, transient, refused, stalled: false, retry_after: None })
}

pub fn registry_of(reference: &str) -> &str {
    reference.split('/').next().unwrap_or(reference)
}

/// Waits between tries of a registry call that failed transiently: about
/// twenty seconds in all, so that a push gets through a registry that fails
/// one connection in five; then the last failure is reported.
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(4),
    Duration::from_secs(4),
    Duration::from_secs(4),
];

/// For a pull that has a build to fall back on: waiting long is worse than building.
pub const QUICK_RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];

/// How long a registry that refuses connections is waited for.
const REFUSED_BUDGET: Duration = Duration::from_millis(1500);

/// Tries of a call whose requests run past their deadline: each costs the
/// whole deadline, so a stalled registry gets one more, not the budget.
const STALLED_TRIES: usize = 2;

/// The longest `Retry-After` honoured between two tries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Whether an error is a registry failure worth another try.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<RegistryError>().is_some_and(|r| r.transient)
}

fn is_refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<RegistryError>().is_some_and(|r| r.refused)
}

fn is_stalled(e: &anyhow::Error) -> bool {
    e.downcast_ref::<RegistryError>().is_some_and(|r| r.stalled)
}

/// How failed registry calls are tried again: within a budget of waits,
/// never once the run is interrupted, each retry told to `events` as
/// [`Event::Retrying`].
#[derive(Clone, Default)]
pub struct Retry {
    interrupt: Interrupt,
    events: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").field("interrupt", &self.interrupt).field("tells", &self.events.is_some()).finish()
    }
}

impl Retry {
    pub fn new(interrupt: Interrupt, events: Option<Arc<dyn Observer>>) -> Retry {
        Retry { interrupt, events }
    }

    /// Runs `call`, again after each transient failure, waiting
    /// [`RETRY_DELAYS`] in turn.
    pub fn run<T>(&self, call: impl FnMut() -> Result<T>) -> Result<T> {
        self.run_with(&RETRY_DELAYS, call)
    }

    /// [`Retry::run`] with waits of its own.
    pub fn run_with<T>(&self, delays: &[Duration], mut call: impl FnMut() -> Result<T>) -> Result<T> {
        let mut waited_refused = Duration::ZERO;
        let mut stalls = 0;
        for (attempt, &delay) in delays.iter().enumerate() {
            match call() {
                Err(e) if is_refused(&e) && waited_refused >= REFUSED_BUDGET => return Err(e),
                Err(e) if is_stalled(&e) && stalls + 1 >= STALLED_TRIES => return Err(e),
                Err(e) if is_transient(&e) && !self.interrupt.is_set() => {
                    if is_refused(&e) {
                        waited_refused += delay;
                    }
                    if is_stalled(&e) {
                        stalls += 1;
                    }
                    let asked = e.downcast_ref::<RegistryError>().and_then(|r| r.retry_after).unwrap_or_default();
                    let wait = delay.max(asked.min(MAX_RETRY_AFTER));
                    if let Some(events) = &self.events {
                        events.event(Event::Retrying(format!(
                            "{e}; try {} in {:.1}s",
                            attempt + 2,
                            wait.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(wait);
                }
                done => return done,
            }
        }
        call()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Mutex;

    use super::*;
    use crate::registry::{Credentials, Registry, Transport};

    /// The retries a client told of.
    #[derive(Default)]
    struct Told(Mutex<Vec<String>>);

    impl Observer for Told {
        fn event(&self, event: Event<'_>) {
            if let Event::Retrying(what) = event {
                self.0.lock().unwrap().push(what);
            }
        }
    }

    /// A registry on loopback that refuses the connection is no registry:
    /// one error that says so, at once, neither retried nor worth a retry.
    #[test]
    fn a_refusal_on_loopback_is_no_registry_and_no_retry() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let told = Arc::new(Told::default());
        let registry = Registry::new(Credentials::from_files(vec![]), Transport::default())
            .retrying(Retry::new(Interrupt::default(), Some(told.clone())));
        for addr in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            for quick in [false, true] {
                let e = registry.exists(&format!("{addr}/images/a_x86_64:0123456789abcdef"), quick).unwrap_err();
                assert_eq!(format!("{e:#}"), format!("no registry at {addr} (nothing listens there)"));
                assert!(!is_transient(&e));
            }
        }
        assert_eq!(*told.0.lock().unwrap(), Vec::<String>::new());
    }

    /// The engine's pulls and pushes say the same in words: a refusal on
    /// loopback is no registry, one elsewhere may pass.
    #[test]
    fn an_engine_refused_on_loopback_is_no_registry() {
        let said = "Error response from daemon: Get \"http://localhost:5000/v2/\": dial tcp 127.0.0.1:5000: connect: \
                    connection refused\n";
        let e = cli_error("localhost:5000/images/a_x86_64:t", said);
        assert_eq!(e.to_string(), "no registry at localhost:5000 (nothing listens there)");
        assert!(!is_transient(&e));
        let said = said.replace("localhost", "build.lan").replace("127.0.0.1", "10.0.0.2");
        let e = cli_error("build.lan:5000/images/a_x86_64:t", &said);
        assert_eq!(e.to_string(), format!("registry build.lan:5000 is not reachable: {}", first_line(&said)));
        assert!(is_transient(&e) && is_refused(&e));
    }
}
