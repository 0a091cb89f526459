//! kvbench's HTTP/1.1 client: one keep-alive connection, one request at a time, the
//! request bytes built in a reused buffer and the response parsed in place (`httparse`).
//!
//! A general-purpose client (reqwest) spent about as much CPU per request as kvd spent
//! serving it. On the 2-core machines these benchmarks run on, the load generator shares
//! the cores with the servers, so its cost compresses every ratio towards 1. This client
//! does only what a v2 keys request needs, like the lean clients of etcd's own `benchmark`
//! tool and of wrk; it treats kvd and etcd identically.

use std::io;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Most response headers accepted (etcd and kvd send about eight).
const MAX_HEADERS: usize = 32;
/// Largest response accepted (kvbench's keys are small; a bigger one is an error).
const MAX_RESPONSE: usize = 1 << 20;

/// One keep-alive HTTP/1.1 connection to a `http://host:port` base URL.
pub(crate) struct Conn {
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    stream: Option<TcpStream>,
    req: Vec<u8>,
    buf: Vec<u8>,
}

/// Splits `http://host:port[/]` into `host:port`.
fn authority(base: &str) -> io::Result<String> {
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("kvbench's HTTP client needs an http:// URL, not {base:?}"),
        )
    })?;
    Ok(rest.trim_end_matches('/').to_owned())
}

impl Conn {
    /// A connection to `base` (`http://host:port`), opened on the first request.
    ///
    /// # Errors
    ///
    /// `base` is not an `http://` URL.
    pub(crate) fn new(base: &str) -> io::Result<Conn> {
        Ok(Conn {
            authority: authority(base)?,
            stream: None,
            req: Vec::with_capacity(1024),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `method path` (with `body` as a form, if any) and reads the whole response;
    /// returns its status code. Reconnects once if the kept-alive connection was closed.
    ///
    /// # Errors
    ///
    /// Connection failures and malformed or oversized responses.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&[u8]>,
    ) -> io::Result<u16> {
        self.req.clear();
        self.req.extend_from_slice(method.as_bytes());
        self.req.push(b' ');
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.req.extend_from_slice(self.authority.as_bytes());
        self.req.extend_from_slice(b"\r\n");
        if let Some(body) = form {
            self.req.extend_from_slice(
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ",
            );
            self.req
                .extend_from_slice(body.len().to_string().as_bytes());
            self.req.extend_from_slice(b"\r\n\r\n");
            self.req.extend_from_slice(body);
        } else {
            self.req.extend_from_slice(b"\r\n");
        }
        let reused = self.stream.is_some();
        match self.round_trip().await {
            Ok(status) => Ok(status),
            // The server may close an idle kept-alive connection; a fresh one is retried
            // once, a failure on a fresh connection is the answer.
            Err(_) if reused => {
                self.stream = None;
                self.round_trip().await
            }
            Err(e) => Err(e),
        }
    }

    async fn round_trip(&mut self) -> io::Result<u16> {
        let result = self.exchange().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self) -> io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.authority).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        stream.write_all(&self.req).await?;
        self.buf.clear();
        loop {
            if let Some((status, end, close)) = parse(&self.buf)? {
                self.buf.drain(..end);
                if close {
                    self.stream = None;
                }
                return Ok(status);
            }
            if self.buf.len() >= MAX_RESPONSE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response larger than 1 MiB",
                ));
            }
            self.buf.reserve(4096);
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response ended",
                ));
            }
        }
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Parses a complete response at the start of `buf`: `(status, bytes used, connection
/// closes)`, or `None` if more bytes are needed.
fn parse(buf: &[u8]) -> io::Result<Option<(u16, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).map_err(|e| bad(format!("response: {e}")))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| bad("bad Content-Length"))?;
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let end = if chunked {
        match chunked_end(&buf[head..])? {
            Some(n) => head + n,
            None => return Ok(None),
        }
    } else if let Some(len) = length {
        if buf.len() < head + len {
            return Ok(None);
        }
        head + len
    } else if matches!(status, 204 | 304) || (100..200).contains(&status) {
        head
    } else {
        return Err(bad("response without Content-Length or chunked encoding"));
    };
    Ok(Some((status, end, close)))
}

/// The length of a complete chunked body at the start of `body`, or `None` if incomplete.
fn chunked_end(body: &[u8]) -> io::Result<Option<usize>> {
    let mut at = 0;
    loop {
        let Some(eol) = body[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&body[at..at + eol]).map_err(|_| bad("chunk size"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| bad("chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // No trailers are sent by kvd or etcd: the body ends with an empty line.
            return Ok((body.len() >= at + 2).then_some(at + 2));
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_responses_parse_only_when_complete() {
        let full = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Etcd-Index: 7\r\n\r\nhello";
        assert_eq!(parse(full).unwrap(), Some((201, full.len(), false)));
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn chunked_responses_and_connection_close() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(full).unwrap(), Some((200, full.len(), true)));
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse(b"NOT HTTP\r\n\r\n").is_err());
        assert!(Conn::new("https://127.0.0.1:1").is_err());
    }

    #[tokio::test]
    async fn requests_reach_a_server_and_survive_its_closing_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers one request per connection, then closes it: the client must reconnect.
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = vec![0u8; 4096];
                let mut n = 0;
                while !req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    n += s.read(&mut req[n..]).await.unwrap();
                }
                // Read the announced body too.
                let text = String::from_utf8_lossy(&req[..n]).into_owned();
                let want = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                let head = text.find("\r\n\r\n").unwrap() + 4;
                while n < head + want {
                    n += s.read(&mut req[n..]).await.unwrap();
                }
                seen.push(String::from_utf8_lossy(&req[..n]).into_owned());
                s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            seen
        });
        let mut c = Conn::new(&format!("http://{addr}")).unwrap();
        let put = c
            .request("PUT", "/v2/keys/a", Some(b"value=x"))
            .await
            .unwrap();
        assert_eq!(put, 201);
        let get = c.request("GET", "/v2/keys/a", None).await.unwrap();
        assert_eq!(get, 201);
        let seen = server.await.unwrap();
        assert!(
            seen[0].starts_with("PUT /v2/keys/a HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].ends_with("\r\n\r\nvalue=x"), "{}", seen[0]);
        assert!(
            seen[1].starts_with("GET /v2/keys/a HTTP/1.1\r\n"),
            "{}",
            seen[1]
        );
    }
}
