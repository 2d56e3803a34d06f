//! HTTP/1.1 for the control API: one request per connection, read with a
//! deadline and size limits, parsed by `httparse`; one response, then the
//! connection is closed (`Connection: close`).
//!
//! Everything a client can get wrong ends in a 4xx response, never in a
//! stuck or dead server: a request head over [`Limits::max_head`] (431), a
//! body over [`Limits::max_body`] (413, answered before the body is read),
//! chunked bodies (411: send `Content-Length`), a malformed request (400),
//! a client too slow to send its request within [`Limits::deadline`] (408).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// What one request may cost the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers, in bytes.
    pub max_head: usize,
    /// Body, in bytes.
    pub max_body: usize,
    /// Time to receive the whole request.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // 32 MiB holds a replacement of 65536 rules written out in full.
        Limits { max_head: 16 * 1024, max_body: 32 * 1024 * 1024, deadline: Duration::from_secs(10) }
    }
}

/// A request as the routes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query, percent-decoded.
    pub path: String,
    /// The `Content-Type` without parameters, lower case (empty when absent).
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Methods the path allows (sent as `Allow` with 405).
    pub allow: Option<&'static str>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response { status, content_type: "application/json", allow: None, body }
    }

    /// A JSON error: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }

    /// A plain-text response.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response { status, content_type, allow: None, body: body.into_bytes() }
    }

    /// 405 Method Not Allowed, with the methods that are.
    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Response {
        Response {
            allow: Some(allow),
            ..Response::error(405, format!("{method} is not allowed on {path} (allowed: {allow})"))
        }
    }
}

/// The reason phrase of a status code.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A connection the server can put deadlines on.
pub trait Conn: Read + Write {
    /// Sets the socket's read timeout.
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    /// Makes an accepted socket blocking, with a write timeout.
    fn prepare(&self, write_timeout: Duration) -> std::io::Result<()>;
}

macro_rules! conn {
    ($t:ty) => {
        impl Conn for $t {
            fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
                <$t>::set_read_timeout(self, t)
            }
            fn prepare(&self, write_timeout: Duration) -> std::io::Result<()> {
                self.set_nonblocking(false)?;
                self.set_write_timeout(Some(write_timeout))
            }
        }
    };
}
conn!(std::os::unix::net::UnixStream);
conn!(std::net::TcpStream);

/// Reads into `buf` until `deadline`; `Err` carries the response for a client
/// that is too slow (408) or went away (400).
fn read_some(c: &mut impl Conn, buf: &mut [u8], deadline: Instant) -> Result<usize, Response> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Response::error(408, "the request was not received in time"));
    }
    let _ = c.set_read_timeout(Some(left));
    match c.read(buf) {
        Ok(0) => Err(Response::error(400, "the connection was closed before the request was complete")),
        Ok(n) => Ok(n),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Err(Response::error(408, "the request was not received in time"))
        }
        Err(e) => Err(Response::error(400, format!("reading the request: {e}"))),
    }
}

/// Reads and parses one request within `limits`.
pub fn read_request(c: &mut impl Conn, limits: &Limits) -> Result<Request, Response> {
    let deadline = Instant::now() + limits.deadline;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = read_some(c, &mut chunk, deadline)?;
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => {
                if buf.len() > limits.max_head {
                    return Err(Response::error(431, format!("the request head is over {} bytes", limits.max_head)));
                }
            }
            Ok(httparse::Status::Complete(head)) => {
                if head > limits.max_head {
                    return Err(Response::error(431, format!("the request head is over {} bytes", limits.max_head)));
                }
                let method = req.method.unwrap_or_default().to_string();
                let target = req.path.unwrap_or_default();
                let raw_path = target.split(['?', '#']).next().unwrap_or_default();
                let path = percent_decode(raw_path)
                    .ok_or_else(|| Response::error(400, format!("`{raw_path}` is not a valid path")))?;
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                if header("transfer-encoding").is_some() {
                    return Err(Response::error(411, "chunked bodies are not accepted: send Content-Length"));
                }
                let length = match header("content-length") {
                    None => 0,
                    Some(v) => v
                        .parse::<usize>()
                        .map_err(|_| Response::error(400, format!("Content-Length `{v}` is not a number")))?,
                };
                if length > limits.max_body {
                    return Err(Response::error(
                        413,
                        format!("the body is {length} bytes, more than the limit of {}", limits.max_body),
                    ));
                }
                let content_type = header("content-type")
                    .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
                    .unwrap_or_default();
                let expect = header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
                let mut body = buf.split_off(head);
                if expect && body.len() < length {
                    let _ = c.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                body.reserve(length.saturating_sub(body.len()));
                while body.len() < length {
                    let n = read_some(c, &mut chunk, deadline)?;
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                return Ok(Request { method, path, content_type, body });
            }
            Err(e) => return Err(Response::error(400, format!("malformed HTTP request: {e}"))),
        }
    }
}

/// `%XX` decoding of a path; `None` when an escape is broken or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Writes `r` and ends the exchange.
pub fn write_response(c: &mut impl Write, r: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if let Some(a) = r.allow {
        head.push_str(&format!("Allow: {a}\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes())?;
    c.write_all(&r.body)?;
    c.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn exchange(raw: &[u8], limits: Limits) -> Result<Request, Response> {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        client.write_all(raw).unwrap();
        read_request(&mut server, &limits)
    }

    #[test]
    fn a_request_with_a_body_is_read_whole() {
        let r = exchange(
            b"PUT /rules/web%2D1?x=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 4\r\n\r\n{}\r\nEXTRA",
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.content_type.as_str()),
            ("PUT", "/rules/web-1", "application/json")
        );
        assert_eq!(r.body, b"{}\r\n");
    }

    #[test]
    fn oversize_bodies_are_refused_before_they_are_read() {
        let limits = Limits { max_body: 10, ..Limits::default() };
        let e = exchange(b"POST /rules HTTP/1.1\r\nContent-Length: 11\r\n\r\n", limits).unwrap_err();
        assert_eq!(e.status, 413);
        assert!(String::from_utf8_lossy(&e.body).contains("11 bytes, more than the limit of 10"));
    }

    #[test]
    fn oversize_heads_malformed_requests_and_chunked_bodies_get_4xx() {
        let limits = Limits { max_head: 64, ..Limits::default() };
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert_eq!(exchange(long.as_bytes(), limits).unwrap_err().status, 431);
        assert_eq!(exchange(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", Limits::default()).unwrap_err().status, 400);
        assert_eq!(exchange(b"\x01\x02 nonsense\r\n\r\n", Limits::default()).unwrap_err().status, 400);
        let chunked = b"POST /rules HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(exchange(chunked, Limits::default()).unwrap_err().status, 411);
        let bad_len = b"POST /rules HTTP/1.1\r\nContent-Length: lots\r\n\r\n";
        assert_eq!(exchange(bad_len, Limits::default()).unwrap_err().status, 400);
        assert_eq!(exchange(b"GET /a%zz HTTP/1.1\r\n\r\n", Limits::default()).unwrap_err().status, 400);
    }

    #[test]
    fn a_slow_client_times_out_and_a_vanished_one_is_a_bad_request() {
        let limits = Limits { deadline: Duration::from_millis(100), ..Limits::default() };
        let (mut client, mut server) = UnixStream::pair().unwrap();
        client.write_all(b"POST /rules HTTP/1.1\r\nContent-Length: 100\r\n\r\n{").unwrap();
        let t = Instant::now();
        assert_eq!(read_request(&mut server, &limits).unwrap_err().status, 408);
        assert!(t.elapsed() < Duration::from_secs(2));
        let (mut client, mut server) = UnixStream::pair().unwrap();
        client.write_all(b"GET /rul").unwrap();
        drop(client);
        assert_eq!(read_request(&mut server, &limits).unwrap_err().status, 400);
    }

    #[test]
    fn expect_continue_is_answered() {
        let (mut client, mut server) = UnixStream::pair().unwrap();
        client.write_all(b"POST /rules HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
        let t = std::thread::spawn(move || read_request(&mut server, &Limits::default()));
        let mut got = [0u8; 25];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"{}").unwrap();
        assert_eq!(t.join().unwrap().unwrap().body, b"{}");
    }

    #[test]
    fn responses_carry_length_close_and_allow() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::method_not_allowed("PATCH", "/rules", "GET, POST, PUT, DELETE")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("Allow: GET, POST, PUT, DELETE\r\n") && text.contains("Connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("PATCH is not allowed on /rules"));
    }
}
