//! A fault-injecting HTTP/1.1 proxy between S3 clients and LocalStack, owned by the tests.
//!
//! Clients (object_store's reqwest-based S3 client, or a `maif` child process through
//! `AWS_ENDPOINT_URL`) talk to [`FaultProxy::endpoint`]; the proxy forwards each request to the
//! real S3 endpoint over a fresh connection, unless the [`Policy`] picks a fault for it:
//!
//! | fault                  | upstream sees the request? | the client gets                       |
//! |------------------------|----------------------------|---------------------------------------|
//! | `ServerError(code)`    | no                         | `code` with a small S3-style XML body |
//! | `ResetBeforeForward`   | no                         | a reset connection, no response       |
//! | `ResetAfterForward`    | yes, and it answered       | a reset connection, no response       |
//! | `CloseWithoutResponse` | yes, and it answered       | a clean close (FIN), no response      |
//! | `TruncatedBody`        | yes, and it answered       | the head and half the body, then FIN  |
//! | `Latency(d)`           | yes, after `d`             | the real response, `d` late           |
//!
//! The faults *after forwarding* are the dangerous ones: S3 has acted (an object was written,
//! a multipart upload completed, an object deleted) but the client cannot tell this from a
//! request that never arrived. A client that retries must cope with its own earlier attempt
//! having succeeded (`If-None-Match: *` now answers 412, a completed upload id is gone, a
//! deleted key is missing), and one that gives up must not report "not done" as a fact.
//! The faults *before forwarding* are the easy ones: nothing happened, so a retry is safe.
//!
//! A truncated body is cut at half of its bytes as they travelled (framing included), so a
//! `Content-Length` or chunked response is visibly incomplete to the client. A response with
//! no body at all (a PUT's 200, any HEAD) has half of its *head* sent instead, so the fault
//! is still a broken response and never a silent success. A response framed by end of stream
//! cannot be truncated detectably; LocalStack does not send those for S3 requests.
//!
//! Resets are real TCP RSTs: the client socket gets `SO_LINGER` 0 before it is dropped, set
//! through `tokio::net::TcpSocket` (std's `set_linger` is unstable, and no `libc` dependency
//! is wanted). Tokio's `net` feature is enabled in this build by object_store's HTTP client.
//!
//! Each request is decided independently from the policy's seed and the request's sequence
//! number, so a run is reproducible up to the order in which concurrent requests arrive.
//! LocalStack's own endpoints (`/_localstack/`) are never faulted.
//!
//! Bounded in time: the proxy listens on 127.0.0.1 only, every socket has 60 s read and write
//! timeouts, and dropping the [`FaultProxy`] stops the listener and shuts down every open
//! socket, which wakes any thread blocked on one, so no proxy thread outlives it for long.
//! A panic in a connection thread only closes that connection.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any socket operation may block before the connection is given up.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request or response head accepted, and longest chunk-size or trailer line.
const MAX_HEAD: u64 = 64 * 1024;
const MAX_LINE: u64 = 8 * 1024;
/// Requests to these paths (LocalStack's health checks) are always forwarded untouched.
const NEVER_FAULTED: &str = "/_localstack/";

/// What happens to one request; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not forwarded; answered with this status and an S3-style XML error body.
    ServerError(u16),
    /// Read, not forwarded; the client connection is reset.
    ResetBeforeForward,
    /// Forwarded and answered upstream; the client connection is reset without a response.
    ResetAfterForward,
    /// Forwarded and answered upstream; the client connection is closed without a response.
    CloseWithoutResponse,
    /// Forwarded; the client gets the response head and half of the body, then a close.
    TruncatedBody,
    /// Held this long, then forwarded normally.
    Latency(Duration),
}

impl Fault {
    /// The variant's name, as counted in [`ProxyStats::faults`].
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::ServerError(_) => "ServerError",
            Fault::ResetBeforeForward => "ResetBeforeForward",
            Fault::ResetAfterForward => "ResetAfterForward",
            Fault::CloseWithoutResponse => "CloseWithoutResponse",
            Fault::TruncatedBody => "TruncatedBody",
            Fault::Latency(_) => "Latency",
        }
    }
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// HTTP methods (any case); empty matches every method.
    pub methods: Vec<String>,
    /// Substrings of the request target, query included; one must occur. Empty matches any.
    pub path_contains: Vec<String>,
}

impl Filter {
    /// Every request.
    pub fn any() -> Self {
        Filter::default()
    }

    /// Requests with one of `methods` whose target contains one of `paths`.
    pub fn new(methods: &[&str], paths: &[&str]) -> Self {
        Filter {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path_contains: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.path_contains.is_empty()
                || self
                    .path_contains
                    .iter()
                    .any(|p| target.contains(p.as_str())))
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub filter: Filter,
    /// Chance, from 0.0 to 1.0, that the rule fires on a matching request.
    pub probability: f64,
    /// One is picked uniformly when the rule fires.
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub seed: u64,
    /// The first rule whose filter matches and whose coin fires decides; if none does, the
    /// request is forwarded untouched.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Every request forwarded untouched.
    pub fn none() -> Self {
        Policy::default()
    }

    /// Every request, with `probability`, gets one of all the fault kinds: 503, 500, resets
    /// before and after forwarding, a close without response, a truncated body, 200 ms latency.
    pub fn mixed(seed: u64, probability: f64) -> Self {
        Policy {
            seed,
            rules: vec![Rule {
                filter: Filter::any(),
                probability,
                faults: vec![
                    Fault::ServerError(503),
                    Fault::ServerError(500),
                    Fault::ResetBeforeForward,
                    Fault::ResetAfterForward,
                    Fault::CloseWithoutResponse,
                    Fault::TruncatedBody,
                    Fault::Latency(Duration::from_millis(200)),
                ],
            }],
        }
    }

    /// `fault` on every request `filter` matches.
    pub fn always(filter: Filter, fault: Fault) -> Self {
        Policy {
            seed: 0,
            rules: vec![Rule {
                filter,
                probability: 1.0,
                faults: vec![fault],
            }],
        }
    }

    /// The fault for request number `sequence`, from the seed and the sequence number only.
    fn decide(&self, sequence: u64, method: &str, target: &str) -> Option<Fault> {
        if target.starts_with(NEVER_FAULTED) {
            return None;
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.filter.matches(method, target) || rule.faults.is_empty() {
                continue;
            }
            let draw = |salt: u64| {
                splitmix64(
                    self.seed
                        ^ splitmix64(sequence)
                        ^ splitmix64(((index as u64) << 1) | salt).rotate_left(17),
                )
            };
            // The top 53 bits as a uniform float in [0, 1).
            let coin = (draw(0) >> 11) as f64 / (1u64 << 53) as f64;
            if coin < rule.probability {
                let pick = (draw(1) % rule.faults.len() as u64) as usize;
                return Some(rule.faults[pick]);
            }
        }
        None
    }
}

/// Sebastiano Vigna's splitmix64 finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted (fewer than requests when clients keep them alive).
    pub connections: u64,
    /// Requests read from clients, faulted or not.
    pub requests: u64,
    /// Faults injected, by [`Fault::kind`].
    pub faults: BTreeMap<String, u64>,
}

impl ProxyStats {
    /// Faults of this kind injected so far.
    pub fn injected(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }

    /// Faults of every kind injected so far.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// State shared by the proxy handle and its threads.
struct Shared {
    upstream: SocketAddr,
    policy: Mutex<Policy>,
    next_sequence: AtomicU64,
    stats: Mutex<ProxyStats>,
    log: Mutex<Vec<String>>,
    stopping: AtomicBool,
    /// A second handle on every open socket, so that dropping the proxy can shut them down
    /// and unblock whichever thread is reading or writing them.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
}

/// Locks, ignoring poisoning: a panicked connection thread leaves the data usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A socket registered with [`Shared::sockets`] for as long as this guard lives (also while
/// unwinding from a panic, so a panicked thread does not keep its connection half open).
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Shared {
    fn register(&self, stream: &TcpStream) -> io::Result<Registered<'_>> {
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        lock(&self.sockets).insert(id, stream.try_clone()?);
        if self.stopping.load(Ordering::SeqCst) {
            // The proxy was dropped between accept and here; its sweep may have missed us.
            let _ = stream.shutdown(Shutdown::Both);
        }
        Ok(Registered { shared: self, id })
    }

    /// Counts a request and its fault before the proxy acts on it, so that a client which
    /// has seen the outcome also sees it in the stats.
    fn count(&self, fault: Option<Fault>) {
        let mut stats = lock(&self.stats);
        stats.requests += 1;
        if let Some(fault) = fault {
            *stats.faults.entry(fault.kind().to_string()).or_default() += 1;
        }
    }

    fn log(&self, line: String) {
        lock(&self.log).push(line);
    }

    /// Sleeps `duration`, waking early if the proxy is dropped.
    fn sleep(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.stopping.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(&self.shared.sockets).remove(&self.id);
    }
}

/// The running proxy; stopped when dropped.
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (e.g.
    /// `http://127.0.0.1:4566`) under `policy`.
    pub fn start(upstream: &str, policy: Policy) -> FaultProxy {
        let authority = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream_address = authority
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .unwrap_or_else(|| panic!("fault proxy: cannot resolve upstream {upstream}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: bind 127.0.0.1:0");
        let address = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            upstream: upstream_address,
            policy: Mutex::new(policy),
            next_sequence: AtomicU64::new(0),
            stats: Mutex::new(ProxyStats::default()),
            log: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("fault-proxy-{}", address.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("fault proxy: spawn acceptor")
        };
        FaultProxy {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The URL clients should use instead of the upstream's: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Replaces the policy for the requests that arrive from now on.
    pub fn set_policy(&self, policy: Policy) {
        *lock(&self.shared.policy) = policy;
    }

    pub fn stats(&self) -> ProxyStats {
        lock(&self.shared.stats).clone()
    }

    /// One line per finished request: sequence number, method, target, fault and outcome.
    /// A line is written once the proxy is done with the request, which may be a moment
    /// after the client saw the outcome.
    pub fn log(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// The last `count` lines of [`log`](Self::log), one per line, for failure messages.
    pub fn log_tail(&self, count: usize) -> String {
        let log = self.log();
        log[log.len().saturating_sub(count)..].join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor out of accept(); it sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        for socket in lock(&self.shared.sockets).values() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            // A connection that failed while being accepted concerns only that client.
            continue;
        };
        lock(&shared.stats).connections += 1;
        let shared = shared.clone();
        // Detached: dropping the proxy shuts the thread's sockets down, which ends it.
        let _ = std::thread::Builder::new()
            .name("fault-proxy-connection".into())
            .spawn(move || serve_client(&shared, client));
    }
}

/// One parsed HTTP message head, headers in their original order and spelling.
struct Head {
    /// Request line or status line, without CRLF.
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| invalid(format!("bad Content-Length {v:?}")))
            })
            .transpose()
    }

    /// The head with hop-by-hop connection headers replaced by `connection`, if any.
    fn encode(&self, drop_headers: &[&str], connection: Option<&str>) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            if !drop_headers.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if let Some(connection) = connection {
            out.push_str(&format!("Connection: {connection}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one CRLF- (or LF-) terminated line of at most `limit` bytes, appending its raw bytes
/// to `raw`; returns the line without its terminator, or `None` at end of stream.
fn read_line(
    reader: &mut impl BufRead,
    limit: u64,
    raw: Option<&mut Vec<u8>>,
) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    reader.by_ref().take(limit).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("line too long or cut short".into()));
    }
    if let Some(raw) = raw {
        raw.extend_from_slice(&line);
    }
    let text = String::from_utf8(line).map_err(|_| invalid("line is not UTF-8".into()))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

/// Reads a message head up to its empty line; `None` if the stream ends before it starts.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut budget = MAX_HEAD;
    let mut start = None;
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader, budget, None)? else {
            return match start {
                None => Ok(None),
                Some(_) => Err(invalid("stream ended inside a message head".into())),
            };
        };
        budget = budget.saturating_sub(line.len() as u64 + 2);
        match &start {
            // Tolerate stray empty lines between messages (RFC 9112 §2.2).
            None if line.is_empty() => continue,
            None => start = Some(line),
            Some(_) if line.is_empty() => break,
            Some(_) => {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    Ok(start.map(|start| Head { start, headers }))
}

/// Reads a chunked body, keeping its bytes exactly as they arrived (sizes, extensions and
/// trailers included), so that it can be forwarded unchanged.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    loop {
        let line = read_line(reader, MAX_LINE, Some(&mut raw))?
            .ok_or_else(|| invalid("stream ended inside a chunked body".into()))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let trailer = read_line(reader, MAX_LINE, Some(&mut raw))?
                    .ok_or_else(|| invalid("stream ended inside chunked trailers".into()))?;
                if trailer.is_empty() {
                    return Ok(raw);
                }
            }
        }
        read_exactly(reader, size + 2, &mut raw)?;
    }
}

fn read_exactly(reader: &mut impl Read, count: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.resize(start + count, 0);
    reader.read_exact(&mut out[start..])
}

/// How a message body is delimited.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilEof,
}

fn read_body(reader: &mut impl BufRead, framing: &Framing) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(length) => read_exactly(reader, *length, &mut body)?,
        Framing::Chunked => body = read_chunked(reader)?,
        Framing::UntilEof => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(body)
}

struct Request {
    head: Head,
    method: String,
    target: String,
    body: Vec<u8>,
    /// Whether the client wants the connection kept open after the response.
    keep_alive: bool,
}

/// Reads the next request on a client connection; `None` when the client has closed it.
fn read_request(client: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let Some(head) = read_head(client)? else {
        return Ok(None);
    };
    let mut parts = head.start.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(format!("bad request line {:?}", head.start)));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let keep_alive = if version.eq_ignore_ascii_case("HTTP/1.0") {
        head.has_token("connection", "keep-alive")
    } else {
        !head.has_token("connection", "close")
    };
    let framing = if head.is_chunked() {
        Framing::Chunked
    } else {
        match head.content_length()? {
            Some(length) => Framing::Length(length),
            None => Framing::None,
        }
    };
    if head.has_token("expect", "100-continue") && !matches!(framing, Framing::None) {
        // The proxy takes the whole body before forwarding, so it answers this itself (and
        // drops the Expect header upstream).
        client
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(client, &framing)?;
    Ok(Some(Request {
        head,
        method,
        target,
        body,
        keep_alive,
    }))
}

/// Headers that describe one connection, not the message; the proxy sets its own.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection", "expect"];

struct Response {
    head: Head,
    /// The body as it travelled, framing included.
    body: Vec<u8>,
    /// Whether the body ended with the upstream connection, so the client's must end too.
    framed_by_eof: bool,
}

/// Sends `request` to the upstream on a connection of its own and reads the whole response.
fn forward(shared: &Shared, request: &Request) -> io::Result<Response> {
    let upstream = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT)?;
    let _registered = shared.register(&upstream)?;
    upstream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    upstream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    upstream.set_nodelay(true)?;
    let mut writer = &upstream;
    writer.write_all(&request.head.encode(HOP_BY_HOP, Some("close")))?;
    writer.write_all(&request.body)?;
    writer.flush()?;
    let mut reader = BufReader::new(&upstream);
    loop {
        let head = read_head(&mut reader)?
            .ok_or_else(|| invalid("upstream closed without a response".into()))?;
        let status = status_of(&head)?;
        if (100..200).contains(&status) && status != 101 {
            // An interim response (e.g. 100 Continue); the final one follows.
            continue;
        }
        let framing = if request.method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            Framing::None
        } else if head.is_chunked() {
            Framing::Chunked
        } else {
            match head.content_length()? {
                Some(length) => Framing::Length(length),
                None => Framing::UntilEof,
            }
        };
        let body = read_body(&mut reader, &framing)?;
        return Ok(Response {
            head,
            body,
            framed_by_eof: matches!(framing, Framing::UntilEof),
        });
    }
}

fn status_of(head: &Head) -> io::Result<u16> {
    head.start
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {:?}", head.start)))
}

/// Resets the connection: `SO_LINGER` 0 makes the close send RST instead of FIN. If the
/// option cannot be set, a shutdown both ways (FIN) is the closest std offers.
fn reset(client: TcpStream) {
    let socket = tokio::net::TcpSocket::from_std_stream(client);
    if socket.set_zero_linger().is_err() {
        // `socket` still owns the descriptor; dropping it closes the connection with a FIN.
        eprintln!("fault proxy: SO_LINGER 0 failed; closing with FIN instead of RST");
    }
}

/// A clean close: FIN after everything written so far.
fn close(client: &TcpStream) {
    let mut writer = client;
    let _ = writer.flush();
    let _ = client.shutdown(Shutdown::Write);
}

fn error_response(status: u16, sequence: u64, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let (code, reason) = match status {
        500 => ("InternalError", "Internal Server Error"),
        503 => ("SlowDown", "Service Unavailable"),
        502 => ("BadGateway", "Bad Gateway"),
        _ => ("InternalError", "Error"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the test fault proxy</Message>\
         <RequestId>fault-proxy-{sequence}</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\n{}\r\n",
        if head_only { 0 } else { body.len() },
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// What became of one request: the log line's tail, and whether the connection goes on.
struct Outcome {
    summary: String,
    keep_alive: bool,
}

fn serve_client(shared: &Shared, client: TcpStream) {
    let Ok(registered) = shared.register(&client) else {
        return;
    };
    if client.set_read_timeout(Some(SOCKET_TIMEOUT)).is_err()
        || client.set_write_timeout(Some(SOCKET_TIMEOUT)).is_err()
    {
        return;
    }
    let _ = client.set_nodelay(true);
    let mut reader = BufReader::new(client);
    loop {
        // A clean close, a timeout on an idle kept-alive connection, or garbage: all end it.
        let Ok(Some(request)) = read_request(&mut reader) else {
            return;
        };
        let sequence = shared.next_sequence.fetch_add(1, Ordering::SeqCst);
        let fault = lock(&shared.policy).decide(sequence, &request.method, &request.target);
        shared.count(fault);
        let line = |fault: Option<Fault>, summary: &str| {
            let fault = fault.map_or("-".to_string(), |f| format!("{f:?}"));
            format!(
                "#{sequence} {} {} [{fault}] {summary}",
                request.method, request.target
            )
        };
        match fault {
            Some(Fault::ResetBeforeForward) => {
                shared.log(line(fault, "reset, not forwarded"));
                drop(registered);
                reset(reader.into_inner());
                return;
            }
            Some(Fault::ResetAfterForward) => {
                let summary = match forward(shared, &request) {
                    Ok(response) => format!("upstream: {}; then reset", response.head.start),
                    Err(e) => format!("upstream failed: {e}; then reset"),
                };
                shared.log(line(fault, &summary));
                drop(registered);
                reset(reader.into_inner());
                return;
            }
            _ => {}
        }
        let outcome = respond(shared, &mut reader, &request, fault, sequence);
        shared.log(line(fault, &outcome.summary));
        if !outcome.keep_alive {
            close(reader.get_ref());
            return;
        }
    }
}

/// Every fault but the resets: answers (or deliberately fails to answer) one request.
fn respond(
    shared: &Shared,
    reader: &mut BufReader<TcpStream>,
    request: &Request,
    fault: Option<Fault>,
    sequence: u64,
) -> Outcome {
    let head_only = request.method.eq_ignore_ascii_case("HEAD");
    if let Some(Fault::ServerError(status)) = fault {
        let response = error_response(status, sequence, head_only, request.keep_alive);
        let sent = reader.get_mut().write_all(&response);
        return Outcome {
            summary: format!("answered {status} without forwarding"),
            keep_alive: request.keep_alive && sent.is_ok(),
        };
    }
    if let Some(Fault::Latency(delay)) = fault {
        shared.sleep(delay);
    }
    let response = match forward(shared, request) {
        Ok(response) => response,
        Err(e) => {
            // Not an injected fault: the upstream itself failed. Say so in a 502 the client
            // can see, rather than a silence that looks like one of ours.
            let sent = reader.get_mut().write_all(&error_response(
                502,
                sequence,
                head_only,
                request.keep_alive,
            ));
            return Outcome {
                summary: format!("upstream failed: {e}; answered 502"),
                keep_alive: request.keep_alive && sent.is_ok(),
            };
        }
    };
    let keep_alive = request.keep_alive && !response.framed_by_eof;
    let head = response
        .head
        .encode(HOP_BY_HOP, (!keep_alive).then_some("close"));
    let client = reader.get_mut();
    match fault {
        Some(Fault::CloseWithoutResponse) => Outcome {
            summary: format!("upstream: {}; closed without response", response.head.start),
            keep_alive: false,
        },
        Some(Fault::TruncatedBody) => {
            let sent = if response.body.is_empty() {
                client.write_all(&head[..head.len() / 2])
            } else {
                client
                    .write_all(&head)
                    .and_then(|()| client.write_all(&response.body[..response.body.len() / 2]))
            };
            let (part, sent_bytes, of) = if response.body.is_empty() {
                ("head", head.len() / 2, head.len())
            } else {
                ("body", response.body.len() / 2, response.body.len())
            };
            Outcome {
                summary: format!(
                    "upstream: {}; sent {sent_bytes} of {of} {part} bytes, then closed{}",
                    response.head.start,
                    if sent.is_err() { " (send failed)" } else { "" }
                ),
                keep_alive: false,
            }
        }
        _ => {
            let sent = client
                .write_all(&head)
                .and_then(|()| client.write_all(&response.body));
            Outcome {
                summary: match &sent {
                    Ok(()) => format!(
                        "{} ({} body bytes)",
                        response.head.start,
                        response.body.len()
                    ),
                    Err(e) => format!("{}; sending to client failed: {e}", response.head.start),
                },
                keep_alive: keep_alive && sent.is_ok(),
            }
        }
    }
}
