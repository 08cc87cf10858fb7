//! Where the engine's API answers for its CLI: docker's daemon on its local
//! socket, or podman's API service, started by the tool for its own run.
//!
//! The podman service: the calls after every build (is the image for
//! `ARCH`? its names) and verify's saves become requests on its socket
//! instead of podman processes, each of which costs about 40 ms and takes the
//! store's locks while the other jobs' builds commit. It is the same podman
//! program, with the same environment, as the CLI: the same store. A podman
//! that talks to a remote service (`--remote`, `CONTAINER_HOST`) has no
//! `system service` to start. It ends by itself after [`IDLE_SECONDS`]
//! without a request, so that a run killed without a chance to stop it
//! leaves nothing behind for long, and is started again when a call finds it
//! ended (after a build longer than that). When it cannot be started, the
//! calls go to the CLI.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use xshell::{cmd, Shell};

use super::api::{api_answers, api_daemon_id, local_docker_socket, Api};
use super::EngineCli;
use crate::process::Interrupt;

/// Seconds without a request after which the service ends by itself.
const IDLE_SECONDS: u32 = 10;

/// How long a started service may take to answer before it is given up.
const START_WAIT: Duration = Duration::from_secs(3);

/// Services started by this process, for socket names of their own.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A stream from the engine's API that ends, failing, once the run is
/// interrupted (as the CLI process it stands for would be stopped).
pub(super) struct Interruptible<'a, R> {
    inner: R,
    interrupt: &'a Interrupt,
}

impl<'a, R> Interruptible<'a, R> {
    pub(super) fn new(inner: R, interrupt: &'a Interrupt) -> Self {
        Interruptible { inner, interrupt }
    }
}

impl<R: std::io::Read> std::io::Read for Interruptible<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.interrupt.is_set() {
            // Not `ErrorKind::Interrupted`, which readers take as "read again".
            return Err(std::io::Error::other("the run was interrupted"));
        }
        self.inner.read(buf)
    }
}

impl EngineCli {
    /// docker's local API socket, when the daemon there is the one the CLI
    /// talks to (same daemon ID): a `docker` on PATH may be a wrapper of
    /// another.
    pub(super) fn verified_docker_api(&self) -> Option<Api> {
        let api = Api::docker(local_docker_socket(self.kind)?);
        let id = api_daemon_id(&api)?;
        let sh = Shell::new().ok()?;
        let program = self.program;
        let format = "{{.ID}}";
        let out = self.read(cmd!(sh, "{program} info --format {format}")).ok()?;
        (out.ok && out.stdout.trim() == id).then_some(api)
    }
}

/// Where the engine's API answers for the CLI.
pub(super) enum LocalApi {
    /// docker's daemon, on its local socket.
    Daemon(Api),
    /// podman's service, started for this run.
    Service(PodmanService),
}

impl LocalApi {
    /// The API, when it answers (a service ended is started again).
    pub(super) fn api(&self) -> Option<&Api> {
        match self {
            LocalApi::Daemon(api) => Some(api),
            LocalApi::Service(service) => service.api(),
        }
    }
}

pub(super) struct PodmanService {
    program: &'static str,
    api: Api,
    /// The running service; `None` once it could not be started.
    child: Mutex<Option<Child>>,
}

impl PodmanService {
    /// A service of `program`'s on a socket of its own in the temporary
    /// directory, answering; `None` when it does not start or answer.
    pub(super) fn start(program: &'static str) -> Option<PodmanService> {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let api = Api::podman(std::env::temp_dir().join(format!("xtask-podman-{}-{n}.sock", std::process::id())));
        let child = spawn(program, &api)?;
        Some(PodmanService { program, api, child: Mutex::new(Some(child)) })
    }

    /// The service's API, started again when it has ended; `None` when it
    /// could not be.
    pub(super) fn api(&self) -> Option<&Api> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let running = child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !running {
            if let Some(mut ended) = child.take() {
                let _ = ended.wait();
                *child = spawn(self.program, &self.api);
            }
        }
        child.is_some().then_some(&self.api)
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.api.socket());
    }
}

/// `podman system service` on `api`'s socket, once it answers there.
fn spawn(program: &str, api: &Api) -> Option<Child> {
    let socket = api.socket();
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new(program)
        .args(["system", "service", &format!("--time={IDLE_SECONDS}"), &format!("unix://{}", socket.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Not in the terminal's process group: Ctrl-C stops the run, which
        // then stops the service itself (it may still be asked meanwhile).
        .process_group(0)
        .spawn()
        .ok()?;
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        if api_answers(api) {
            return Some(child);
        }
        if !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(socket);
    None
}
