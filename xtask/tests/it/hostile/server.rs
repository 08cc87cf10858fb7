//! A server of the test's own on a loopback address: HTTP/1.1, a thread per
//! connection, keep-alive, every answer given by the test's closure, every
//! request recorded (its head, and its body's length and digest: an upload
//! of any size is never held whole). Two servers on different loopback
//! addresses are two hosts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// `sha256:<hex>` of the whole body.
    pub body_digest: String,
    /// The body's first MiB.
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter's value, undecoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    }

    /// `METHOD target`, for messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// How the body of an answer is sent.
pub enum Body {
    Bytes(Vec<u8>),
    /// One byte at a time, waiting this long before each.
    Trickle(Vec<u8>, Duration),
    /// [`pattern`] bytes of this length, made as they are sent.
    Pattern(u64),
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Answer {
    pub fn new(status: u16) -> Answer {
        Answer { status, headers: Vec::new(), body: Body::Bytes(Vec::new()) }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Answer {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: Body) -> Answer {
        self.body = body;
        self
    }

    pub fn bytes(self, bytes: impl Into<Vec<u8>>) -> Answer {
        self.body(Body::Bytes(bytes.into()))
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Answer {
        Answer::new(status).header("Content-Type", "application/json").bytes(serde_json::to_vec(value).unwrap())
    }
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// A server listening on a loopback address until dropped.
pub struct Server {
    /// `ip:port`
    pub addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Listens on `ip` (a loopback address) and answers with `handler`,
    /// which is given the server's own `ip:port` too.
    pub fn start(ip: &str, handler: impl Fn(&str, &Request) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let own = addr.clone();
        let handler: Arc<Handler> = Arc::new(move |r: &Request| handler(&own, r));
        let (log, stopped) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (handler, log) = (handler.clone(), log.clone());
                thread::spawn(move || serve(stream, &*handler, &log));
            }
        });
        Server { addr, requests, stop }
    }

    /// Every request so far, in the order they were read.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    // Thousands of small answers on one connection: none waits for an ACK.
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let Some(request) = read_request(&mut reader) else { return };
        let close = request.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        log.lock().unwrap().push(request.clone());
        let answer = handler(&request);
        if write_answer(&mut writer, &request, answer).is_err() || close {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Request { method, target, headers, body_len: 0, body_digest: String::new(), body: Vec::new() };
    let mut hasher = Sha256::new();
    let mut take = |chunk: &[u8], request: &mut Request| {
        hasher.update(chunk);
        request.body_len += chunk.len() as u64;
        let room = (1usize << 20).saturating_sub(request.body.len());
        request.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    };
    let mut buf = vec![0u8; 1 << 16];
    if request.header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = u64::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end).ok()?;
                break;
            }
            let mut left = size;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                let k = reader.read(&mut buf[..n]).ok()?;
                if k == 0 {
                    return None;
                }
                take(&buf[..k], &mut request);
                left -= k as u64;
            }
            let mut crlf = String::new();
            reader.read_line(&mut crlf).ok()?;
        }
    } else {
        let mut left: u64 = request.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            let k = reader.read(&mut buf[..n]).ok()?;
            if k == 0 {
                // Cut short: what came is what the test looks at.
                break;
            }
            take(&buf[..k], &mut request);
            left -= k as u64;
        }
    }
    request.body_digest = format!("sha256:{}", hex(&hasher.finalize()));
    Some(request)
}

fn write_answer(writer: &mut TcpStream, request: &Request, answer: Answer) -> std::io::Result<()> {
    let length = match &answer.body {
        Body::Bytes(b) | Body::Trickle(b, _) => b.len() as u64,
        Body::Pattern(n) => *n,
    };
    let mut head = format!("HTTP/1.1 {} X\r\nContent-Length: {length}\r\n", answer.status);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut start = head.into_bytes();
    if request.method == "HEAD" {
        return writer.write_all(&start);
    }
    if let Body::Bytes(bytes) = &answer.body {
        start.extend_from_slice(bytes);
    }
    writer.write_all(&start)?;
    match answer.body {
        Body::Bytes(_) => {}
        Body::Trickle(bytes, pause) => {
            for byte in bytes {
                thread::sleep(pause);
                writer.write_all(&[byte])?;
                writer.flush()?;
            }
        }
        Body::Pattern(n) => std::io::copy(&mut pattern(n), writer).map(|_| ())?,
    }
    writer.flush()
}

/// `n` bytes that no compression or accident makes short, the same every time.
pub fn pattern(n: u64) -> impl Read {
    struct Pattern {
        at: u64,
        end: u64,
    }
    impl Read for Pattern {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let k = buf.len().min((self.end - self.at) as usize);
            for (i, b) in buf[..k].iter_mut().enumerate() {
                let x = self.at + i as u64;
                *b = (x.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (x >> 20) as u8;
            }
            self.at += k as u64;
            Ok(k)
        }
    }
    Pattern { at: 0, end: n }
}

/// `sha256:<hex>` of [`pattern`]`(n)`.
pub fn pattern_digest(n: u64) -> String {
    let mut hasher = Sha256::new();
    std::io::copy(&mut pattern(n), &mut hasher).unwrap();
    format!("sha256:{}", hex(&hasher.finalize()))
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
