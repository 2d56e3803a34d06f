//! The control API of `flowsteer run`: HTTP/1.1 with JSON bodies on a Unix
//! socket (so `curl --unix-socket` works), and optionally a TCP listener
//! that serves only `GET /metrics`. Endpoints: [`routes`]; `docs/API.md`.
//!
//! Only the socket's owner can connect: the socket is mode 0600 and every
//! connection's peer credentials (`SO_PEERCRED`) must be our user or root.
//! Each connection gets a thread of its own, at most [`MAX_CLIENTS`] at a
//! time (more are answered 503 at once), and a deadline for its request, so
//! a slow or stuck client never blocks the others.

pub mod http;
pub mod metrics;
pub mod routes;
pub mod rule_json;

use http::{read_request, write_response, Conn, Limits, Response};
use routes::{route, Ctx};
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections served at the same time; more are refused with 503.
pub const MAX_CLIENTS: usize = 16;
/// How long writing a response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the accept loops look at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be made.
    #[error("control socket {path}: {message}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The metrics listener could not be opened.
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The running API: its listener threads. Dropping it stops them and
/// removes the socket.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    socket: PathBuf,
}

/// Binds the Unix socket at `path`: makes its directory, removes a stale
/// socket (one nobody answers on), refuses to take over a live one or a
/// file that is not a socket, and sets mode 0600.
fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let err = |message: String| ApiError::Socket { path: path.to_path_buf(), message };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(err("exists and is not a socket; not touching it".into()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(err("another flowsteer is serving on it (stop it, or set control.socket)".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
        log::info!("removed the stale control socket {}", path.display());
    }
    let l = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(format!("chmod 0600: {e}")))?;
    l.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
    Ok(l)
}

/// Whether the peer of `s` is our own user or root.
fn peer_allowed(s: &UnixStream) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(s).map_err(|e| format!("cannot read peer credentials: {e}"))?;
    let uid = cred.uid.as_raw();
    let me = rustix::process::geteuid().as_raw();
    if uid == me || uid == 0 {
        Ok(())
    } else {
        Err(format!("uid {uid} is not allowed: only uid {me} (the owner) and root may use this socket"))
    }
}

/// Serves one connection.
fn serve<C: Conn>(mut c: C, ctx: &Ctx, metrics_only: bool) {
    let limits = Limits::default();
    let resp = match read_request(&mut c, &limits) {
        Ok(req) => {
            if metrics_only && req.path != "/metrics" {
                Response::error(404, "this listener serves only GET /metrics")
            } else if metrics_only && req.method != "GET" {
                Response::method_not_allowed(&req.method, "/metrics", "GET")
            } else {
                let r = route(ctx, &req);
                log::debug!("control API: {} {} -> {}", req.method, req.path, r.status);
                r
            }
        }
        Err(r) => r,
    };
    let _ = write_response(&mut c, &resp);
}

/// Takes a connection slot, or `None` when [`MAX_CLIENTS`] are being served.
fn take_slot(active: &Arc<AtomicUsize>) -> Option<SlotGuard> {
    let n = active.fetch_add(1, Ordering::AcqRel);
    if n >= MAX_CLIENTS {
        active.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(SlotGuard(Arc::clone(active)))
}

/// Gives the connection slot back when the connection's thread ends.
struct SlotGuard(Arc<AtomicUsize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers 503 on a connection that gets no slot (without reading its request).
fn refuse<C: Conn>(mut c: C) {
    let _ = write_response(
        &mut c,
        &Response::error(503, format!("too many clients (at most {MAX_CLIENTS} at a time); retry")),
    );
}

/// Accepts connections until `stop`, each served on a thread of its own
/// once `admit` lets it in and a slot is free. Also keeps the workers'
/// progress current for `/health` (every round, about every 20 ms).
fn accept_loop<C: Conn + Send + 'static>(
    mut accept: impl FnMut() -> std::io::Result<C>,
    admit: impl Fn(&C) -> Result<(), String>,
    ctx: &Arc<Ctx>,
    stop: &AtomicBool,
    active: &Arc<AtomicUsize>,
    metrics_only: bool,
) {
    while !stop.load(Ordering::Relaxed) {
        ctx.progress.update(&ctx.shared);
        match accept() {
            Ok(mut c) => {
                let _ = c.prepare(WRITE_TIMEOUT);
                if let Err(why) = admit(&c) {
                    log::warn!("control API: refused a connection: {why}");
                    let _ = write_response(&mut c, &Response::error(403, why));
                    continue;
                }
                let Some(slot) = take_slot(active) else {
                    refuse(c);
                    continue;
                };
                let ctx = Arc::clone(ctx);
                let r = std::thread::Builder::new().name("control-conn".into()).spawn(move || {
                    let _slot = slot;
                    serve(c, &ctx, metrics_only);
                });
                if let Err(e) = r {
                    log::warn!("control API: cannot start a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                log::warn!("control API: accept: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

impl Server {
    /// Starts the API on `socket` and, if given, the metrics listener on
    /// `metrics`.
    pub fn start(ctx: Arc<Ctx>, socket: &Path, metrics: Option<std::net::SocketAddr>) -> Result<Server, ApiError> {
        let listener = bind(socket)?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let metrics_listener = match metrics {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr).map_err(|source| ApiError::Metrics { addr, source })?;
                l.set_nonblocking(true).map_err(|source| ApiError::Metrics { addr, source })?;
                log::info!("metrics on http://{addr}/metrics");
                Some(l)
            }
            None => None,
        };
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| ApiError::Socket {
                path: socket.to_path_buf(),
                message: format!("cannot start a thread: {e}"),
            })
        };
        {
            let (ctx, stop, active) = (Arc::clone(&ctx), Arc::clone(&stop), Arc::clone(&active));
            let accept = move || listener.accept().map(|(s, _)| s);
            threads.push(spawn(
                "control-api",
                Box::new(move || accept_loop(accept, peer_allowed, &ctx, &stop, &active, false)),
            )?);
        }
        if let Some(l) = metrics_listener {
            let (ctx, stop, active) = (Arc::clone(&ctx), Arc::clone(&stop), Arc::clone(&active));
            let accept = move || l.accept().map(|(s, _)| s);
            threads
                .push(spawn("metrics", Box::new(move || accept_loop(accept, |_| Ok(()), &ctx, &stop, &active, true)))?);
        }
        log::info!("control API on {}", socket.display());
        Ok(Server { stop, threads, socket: socket.to_path_buf() })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
