//! Process control: every engine process is started here, in a process
//! group of its own that is told to stop if the tool dies; its output is
//! teed into the log as it comes; an interrupt stops them all.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};

/// Whether the run was interrupted (Ctrl-C, SIGTERM). Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a process printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The program of a command is not installed.
#[derive(Debug)]
pub struct NotFound;

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not installed")
    }
}

impl std::error::Error for NotFound {}

/// The processes one run started and has not seen end, and its interrupt.
/// Clones share both.
#[derive(Clone, Debug, Default)]
pub struct Processes {
    /// Process IDs, each also the ID of the process's group.
    running: Arc<Mutex<Vec<u32>>>,
    interrupt: Interrupt,
}

impl Processes {
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// Marks the run interrupted and sends SIGINT to every running process
    /// group, so the signal reaches what each process started too.
    pub fn stop_all(&self) {
        self.interrupt.set();
        for &pid in self.running.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            // SAFETY: kill(2) has no memory effects; a stale pid group is harmless.
            unsafe { libc::kill(-(pid as i32), libc::SIGINT) };
        }
    }

    /// On Ctrl-C or SIGTERM: [`Processes::stop_all`], so that the executor
    /// winds down without starting more work. One handler per process: a
    /// later call keeps the first.
    pub fn stop_all_on_signals(&self) {
        let processes = self.clone();
        let _ = ctrlc::set_handler(move || processes.stop_all());
    }

    /// Runs `command` to completion; both of its streams go to `log` when
    /// given (then `stderr` of the answer holds both, in order). `echo` gets
    /// what it prints, whole lines as they come. Fails with [`NotFound`]
    /// when the program is not installed, and once the run is interrupted.
    pub fn run(&self, mut command: Command, log: Option<&Path>, echo: Option<&dyn Fn(&str)>) -> Result<Output> {
        let shown = format!("{command:?}");
        tied_to_this_tool(&mut command);
        // With a log, both streams go through one pipe, in order, into the log
        // as they come (so it can be followed) and into memory, so failures
        // are judged by this call's own output even when another process
        // writes the same log.
        let mut logged = None;
        if let Some(log) = log {
            let file = File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("cannot write log {}", log.display()))?;
            let (reader, writer) = std::io::pipe().context("cannot make a pipe")?;
            command.stdout(writer.try_clone()?).stderr(writer);
            logged = Some((reader, file));
        } else {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        if self.interrupt.is_set() {
            bail!("interrupted");
        }
        let spawned = command.spawn();
        // Our copies of the pipe's writing end must close, or reading never ends.
        drop(command);
        let child = spawned.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(NotFound),
            _ => anyhow!("cannot run {shown}: {e}"),
        })?;
        let pid = child.id();
        self.running.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        let mut combined = Vec::new();
        let mut echoed = 0;
        if let Some((mut reader, mut file)) = logged {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = file.write_all(&buf[..n]);
                        combined.extend_from_slice(&buf[..n]);
                        // Whole lines as they come; the rest once the call ends.
                        if let Some(echo) = echo {
                            if let Some(end) = combined.iter().rposition(|&b| b == b'\n') {
                                if end >= echoed {
                                    echo(&String::from_utf8_lossy(&combined[echoed..=end]));
                                    echoed = end + 1;
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let out = child.wait_with_output();
        self.running.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
        let mut out = out.with_context(|| format!("cannot wait for {shown}"))?;
        if self.interrupt.is_set() {
            bail!("interrupted");
        }
        if let Some(echo) = echo {
            if log.is_some() {
                echo(&String::from_utf8_lossy(&combined[echoed.min(combined.len())..]));
            } else {
                echo(&String::from_utf8_lossy(&out.stdout));
                echo(&String::from_utf8_lossy(&out.stderr));
            }
        }
        if log.is_some() {
            out.stderr = combined;
        }
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
    /// Runs `command` to completion, handing what it prints on stdout to
    /// `read` as it comes, so that none of it is held in memory unless
    /// `read` keeps it; what it prints on stderr is the answer's (its last
    /// 64 KiB). When `read` fails, the process is stopped; when `read` ends
    /// before the output does, the rest is read and dropped. Fails as
    /// [`Processes::run`] does; `read`'s own failure comes back inside.
    pub fn stream<T>(
        &self,
        mut command: Command,
        read: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<(Result<T>, Output)> {
        let shown = format!("{command:?}");
        tied_to_this_tool(&mut command);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if self.interrupt.is_set() {
            bail!("interrupted");
        }
        let mut child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(NotFound),
            _ => anyhow!("cannot run {shown}: {e}"),
        })?;
        let pid = child.id();
        self.running.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (read, stderr) = std::thread::scope(|scope| {
            // Drained as it comes: a process that fills the pipe of a stream
            // nobody reads would stop.
            let errors = scope.spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 8 * 1024];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > STREAM_STDERR_KEPT {
                        kept.drain(..kept.len() - STREAM_STDERR_KEPT);
                    }
                }
                kept
            });
            let read = read(&mut stdout);
            match &read {
                Ok(_) => {
                    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
                }
                // SAFETY: kill(2) on the process group this call started.
                Err(_) => unsafe {
                    libc::kill(-(pid as i32), libc::SIGTERM);
                },
            }
            drop(stdout);
            (read, errors.join().unwrap_or_default())
        });
        let status = child.wait();
        self.running.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
        let status = status.with_context(|| format!("cannot wait for {shown}"))?;
        if self.interrupt.is_set() {
            bail!("interrupted");
        }
        let out = Output {
            ok: status.success(),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        };
        Ok((read, out))
    }
}

/// How much of a streamed process's stderr is kept, the end of it.
const STREAM_STDERR_KEPT: usize = 64 * 1024;

/// Starts `command` with nothing on stdin, in a process group of its own,
/// so that [`Processes::stop_all`] reaches what it starts too.
fn tied_to_this_tool(command: &mut Command) {
    command.stdin(Stdio::null()).process_group(0);
    // SAFETY: prctl is async-signal-safe. If this tool dies, even by
    // SIGKILL, the process gets SIGTERM instead of running on (the
    // engine cancels a build whose client went away).
    // SIGINT back to its default: a tool started with it ignored (in the
    // background of a script) would hand that on, and `stop_all` could
    // not stop what it runs.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0
                || libc::signal(libc::SIGINT, libc::SIG_DFL) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The first line of a command's output that says something, for a message.
pub fn first_line(s: &str) -> &str {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn tees_both_streams_in_order_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, "before\n").unwrap();
        let seen = Mutex::new(String::new());
        let echo = |text: &str| seen.lock().unwrap().push_str(text);
        let out = Processes::default().run(sh("echo one; echo two >&2; echo three"), Some(&log), Some(&echo)).unwrap();
        assert!(out.ok);
        assert_eq!(out.stderr, "one\ntwo\nthree\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "before\none\ntwo\nthree\n");
        assert_eq!(*seen.lock().unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn without_a_log_streams_stay_apart() {
        let out = Processes::default().run(sh("echo out; echo err >&2; exit 3"), None, None).unwrap();
        assert_eq!((out.ok, out.stdout.as_str(), out.stderr.as_str()), (false, "out\n", "err\n"));
    }

    #[test]
    fn streams_stdout_to_its_reader_and_keeps_stderr() {
        let read_all = |r: &mut dyn Read| {
            let mut text = String::new();
            r.read_to_string(&mut text)?;
            Ok(text)
        };
        let (read, out) = Processes::default().stream(sh("echo one; echo err >&2; echo two"), read_all).unwrap();
        assert_eq!(read.unwrap(), "one\ntwo\n");
        assert!(out.ok);
        assert_eq!(out.stderr, "err\n");
        // A reader done before the output is: the rest is read, the process ends as it would.
        let first_byte = |r: &mut dyn Read| {
            let mut byte = [0u8; 1];
            r.read_exact(&mut byte)?;
            Ok(byte[0])
        };
        let (read, out) = Processes::default().stream(sh("echo abc; exit 3"), first_byte).unwrap();
        assert_eq!((read.unwrap(), out.ok), (b'a', false));
    }

    #[test]
    fn a_failing_reader_stops_the_process() {
        let started = std::time::Instant::now();
        // `yes` writes until it is stopped.
        let enough = |r: &mut dyn Read| -> Result<()> {
            let mut some = [0u8; 16];
            r.read_exact(&mut some)?;
            bail!("enough")
        };
        let (read, out) = Processes::default().stream(Command::new("yes"), enough).unwrap();
        assert_eq!(read.unwrap_err().to_string(), "enough");
        assert!(!out.ok);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let e = Processes::default().run(Command::new("/nonexistent/program"), None, None).unwrap_err();
        assert!(e.downcast_ref::<NotFound>().is_some(), "{e:#}");
    }

    /// Runs `sleep 30`, stops it as soon as it runs; how long that took.
    /// Not through `sh -c`: a shell that gets SIGINT before it has started
    /// its command holds it until the command ends.
    fn stopped_sleep(processes: &Processes) -> std::time::Duration {
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            let running = scope.spawn(|| {
                let mut sleep = Command::new("sleep");
                sleep.arg("30");
                processes.run(sleep, None, None)
            });
            while processes.running.lock().unwrap().is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            processes.stop_all();
            let e = running.join().unwrap().unwrap_err();
            assert_eq!(e.to_string(), "interrupted");
        });
        started.elapsed()
    }

    #[test]
    fn stop_all_ends_running_processes_and_refuses_new_ones() {
        let processes = Processes::default();
        assert!(stopped_sleep(&processes) < std::time::Duration::from_secs(20));
        assert!(processes.interrupt().is_set());
        let e = processes.run(sh("true"), None, None).unwrap_err();
        assert_eq!(e.to_string(), "interrupted");
        // Clones share the interrupt, a fresh set does not.
        assert!(processes.clone().interrupt().is_set());
        assert!(!Processes::default().interrupt().is_set());
    }

    #[test]
    fn stop_all_ends_processes_of_a_tool_started_with_sigint_ignored() {
        // SAFETY: signal(2) on this test's own process (nextest runs each
        // test in a process of its own); restored before the end.
        let before = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
        let took = stopped_sleep(&Processes::default());
        unsafe { libc::signal(libc::SIGINT, before) };
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    }
}
