//! A flaky loopback registry: a TCP proxy in front of a real registry that,
//! for a share of its connections chosen by a seeded generator, answers
//! `503 Service Unavailable`, resets the connection, or holds it for a while
//! before passing it on. By default every request gets a connection of its
//! own (the proxy adds `Connection: close`), so a fault hits one request;
//! or clients may keep connections, as through a flaky load balancer. It
//! can also slow uploads down, so that a push lasts long enough to be
//! interrupted, and hold back chosen requests.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::rng::Rng;

/// What the proxy does to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `HTTP/1.1 503 Service Unavailable`, then close.
    Unavailable,
    /// Close with the request unread, which resets the connection.
    Reset,
    /// Wait 0.5 to 2 seconds, then pass the connection on.
    Delay,
}

#[derive(Default, Debug)]
pub struct Counts {
    pub connections: AtomicUsize,
    pub unavailable: AtomicUsize,
    pub reset: AtomicUsize,
    pub delayed: AtomicUsize,
}

impl Counts {
    /// Faults injected so far: (503 answers, resets, delays).
    pub fn faults(&self) -> (usize, usize, usize) {
        (
            self.unavailable.load(Ordering::SeqCst),
            self.reset.load(Ordering::SeqCst),
            self.delayed.load(Ordering::SeqCst),
        )
    }
}

struct Shared {
    upstream: Mutex<String>,
    /// Faults per thousand connections.
    rate: AtomicU32,
    /// Which faults may be drawn: bit 0 unavailable, 1 reset, 2 delay.
    kinds: AtomicU32,
    /// Whether every request gets a connection of its own (and so its own
    /// draw), or clients may keep a connection for several requests.
    per_request: AtomicBool,
    /// Upload speed limit in bytes per second; 0 for none.
    throttle: AtomicU64,
    seed: u64,
    next: AtomicU64,
    counts: Counts,
    /// The first line of every request passed on, in order.
    requests: Mutex<Vec<String>>,
    /// Requests whose first line holds all of these are held back this long.
    hold: Mutex<Option<(Vec<String>, Duration)>>,
    held: AtomicUsize,
    stop: AtomicBool,
}

pub struct Proxy {
    /// `127.0.0.1:<port>`
    pub addr: String,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(upstream: &str, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream.to_string()),
            rate: AtomicU32::new(0),
            kinds: AtomicU32::new(0b111),
            per_request: AtomicBool::new(true),
            throttle: AtomicU64::new(0),
            seed,
            next: AtomicU64::new(0),
            counts: Counts::default(),
            requests: Mutex::new(Vec::new()),
            hold: Mutex::new(None),
            held: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let shared = accepting.clone();
                thread::spawn(move || serve(&shared, conn));
            }
        });
        Proxy { addr, shared }
    }

    /// Faults per thousand connections, drawn from `kinds`.
    pub fn set_faults(&self, per_mille: u32, kinds: &[Fault]) {
        let bits = kinds.iter().fold(0, |b, k| {
            b | match k {
                Fault::Unavailable => 1,
                Fault::Reset => 2,
                Fault::Delay => 4,
            }
        });
        self.shared.kinds.store(bits, Ordering::SeqCst);
        self.shared.rate.store(per_mille, Ordering::SeqCst);
    }

    /// `true` (the default): one request per connection, each drawn for a
    /// fault, and each request line recorded; `false`: clients keep
    /// connections for several requests, and only a connection's first
    /// request is drawn for a fault and recorded.
    pub fn set_per_request(&self, per_request: bool) {
        self.shared.per_request.store(per_request, Ordering::SeqCst);
    }

    /// Limits uploads (client to registry) to `bytes_per_second`; 0 lifts it.
    pub fn set_throttle(&self, bytes_per_second: u64) {
        self.shared.throttle.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Holds back requests whose first line contains all of `needles` for
    /// `pause` before passing them on (to whatever registry there is then).
    pub fn set_hold(&self, hold: Option<(&[&str], Duration)>) {
        *self.shared.hold.lock().unwrap() = hold.map(|(n, d)| (n.iter().map(|s| s.to_string()).collect(), d));
    }

    /// How many requests were held back so far.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// Request lines passed on to the registry so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread so that it sees `stop`.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn draw(shared: &Shared, n: u64) -> Option<(Fault, Duration)> {
    let mut rng = Rng::new(shared.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    if rng.below(1000) as u64 >= u64::from(shared.rate.load(Ordering::SeqCst)) {
        return None;
    }
    let bits = shared.kinds.load(Ordering::SeqCst);
    let kinds: Vec<Fault> = [(1, Fault::Unavailable), (2, Fault::Reset), (4, Fault::Delay)]
        .into_iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, k)| k)
        .collect();
    let kind = *kinds.get(rng.below(kinds.len().max(1)))?;
    Some((kind, Duration::from_millis(500 + rng.below(1500) as u64)))
}

fn serve(shared: &Shared, client: TcpStream) {
    let n = shared.next.fetch_add(1, Ordering::SeqCst);
    shared.counts.connections.fetch_add(1, Ordering::SeqCst);
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut first = [0u8; 1];
    if client.peek(&mut first).ok() != Some(1) {
        return;
    }
    // Clients try TLS first even with a plain-HTTP registry on loopback, and
    // fall back to HTTP on the registry's answer: pass such a probe through.
    if !first[0].is_ascii_uppercase() {
        forward(shared, client, Vec::new());
        return;
    }
    let fault = draw(shared, n);
    if let Some((Fault::Reset, _)) = fault {
        // Close with the request unread: the kernel answers unread data with a reset.
        shared.counts.reset.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let Some((head, rest)) = read_head(&client) else { return };
    match fault {
        Some((Fault::Unavailable, _)) => {
            shared.counts.unavailable.fetch_add(1, Ordering::SeqCst);
            let mut client = client;
            let _ = client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nservice unavailable\n",
            );
            let _ = client.shutdown(Shutdown::Write);
            // Let the client read the answer before the socket goes.
            let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = std::io::copy(&mut (&client).take(1 << 20), &mut std::io::sink());
            return;
        }
        Some((Fault::Delay, pause)) => {
            shared.counts.delayed.fetch_add(1, Ordering::SeqCst);
            thread::sleep(pause);
        }
        _ => {}
    }
    let line = head.lines().next().unwrap_or("").to_string();
    let hold = shared.hold.lock().unwrap().clone();
    if let Some((needles, pause)) = hold {
        if needles.iter().all(|n| line.contains(n.as_str())) {
            shared.held.fetch_add(1, Ordering::SeqCst);
            thread::sleep(pause);
        }
    }
    shared.requests.lock().unwrap().push(line);
    let mut start =
        if shared.per_request.load(Ordering::SeqCst) { close_after(&head).into_bytes() } else { head.into_bytes() };
    start.extend_from_slice(&rest);
    forward(shared, client, start);
}

/// Connects to the registry, sends `start`, then passes bytes both ways
/// until either side is done.
fn forward(shared: &Shared, client: TcpStream, start: Vec<u8>) {
    let upstream_addr = shared.upstream.lock().unwrap().clone();
    let Ok(upstream) = TcpStream::connect(&upstream_addr) else { return };
    if (&upstream).write_all(&start).is_err() {
        return;
    }
    let up = upstream.try_clone().unwrap();
    let down = client.try_clone().unwrap();
    let throttle = shared.throttle.load(Ordering::SeqCst);
    let uploading = thread::spawn(move || {
        pump(&down, &up, throttle);
        let _ = up.shutdown(Shutdown::Write);
    });
    pump(&upstream, &client, 0);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = uploading.join();
}

/// Reads up to the end of the request head; returns it and whatever of the
/// body came with it.
fn read_head(mut client: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 1 << 16 {
            return None;
        }
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// The request head with `Connection: close`, so the registry answers one
/// request per connection.
fn close_after(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn pump(mut from: &TcpStream, mut to: &TcpStream, bytes_per_second: u64) {
    let mut buf = [0u8; 16384];
    loop {
        let k = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if to.write_all(&buf[..k]).is_err() {
            return;
        }
        if let Some(micros) = (k as u64 * 1_000_000).checked_div(bytes_per_second) {
            thread::sleep(Duration::from_micros(micros));
        }
    }
}
