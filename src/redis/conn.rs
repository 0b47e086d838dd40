//! One blocking connection to Redis: the `redis://` URL, connecting (with `AUTH` and
//! `SELECT`), and commands sent as a pipeline and answered in order.
//!
//! Every read and write is bounded by the connection's timeout, so a Redis that stops
//! answering costs a thread at most that long; any I/O fault, timeout or undecodable reply
//! closes the connection (its caller drops it and reconnects later): after one, which
//! commands of a pipeline were applied is unknown.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::resp::{self, Cmd, Value};
use super::Error;

/// Where Redis is: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Url {
    /// The URL without its password (it goes in log lines).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let auth = match (&self.user, &self.password) {
            (Some(u), _) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            _ => String::new(),
        };
        write!(f, "redis://{auth}{host}:{}/{}", self.port, self.db)
    }
}

/// Decodes `%XX` escapes (user names and passwords may hold `@`, `:` or `/`).
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

impl Url {
    /// Parses a `--redis` value. Port 6379 and database 0 when left out. `rediss://` (TLS)
    /// and anything but a host, port, database and credentials are refused.
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = match s.strip_prefix("redis://") {
            Some(r) => r,
            None if s.starts_with("rediss://") => {
                return Err("rediss:// (TLS) is not supported yet".into())
            }
            None => return Err(format!("{s:?} does not start with redis://")),
        };
        let (auth, rest) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, db) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if db.contains(['?', '#']) {
            return Err(format!("{s:?}: query strings are not supported"));
        }
        let db = if db.is_empty() {
            0
        } else {
            db.parse()
                .map_err(|_| format!("{s:?}: database {db:?} is not a number"))?
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| format!("{s:?}: unclosed ["))?;
            (&v6[..end], v6[end + 1..].strip_prefix(':'))
        } else {
            match hostport.rfind(':') {
                Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let port = match port {
            None => 6379,
            Some(p) => p
                .parse()
                .map_err(|_| format!("{s:?}: port {p:?} is not a number"))?,
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => {
                let (u, p) = match a.find(':') {
                    Some(i) => (&a[..i], Some(&a[i + 1..])),
                    None => (a, None),
                };
                let user = (!u.is_empty()).then(|| percent_decode(u)).transpose()?;
                let password = p.map(percent_decode).transpose()?;
                // `redis://secret@host`: a lone word is a password, as redis-cli reads it.
                match (user, password) {
                    (Some(u), None) => (None, Some(u)),
                    other => other,
                }
            }
        };
        Ok(Url {
            host: host.to_string(),
            port,
            db,
            user,
            password,
        })
    }
}

/// The largest reply read: far above any script's answer (a read is at most a channel's
/// retained messages); past it the connection is out of step.
const MAX_REPLY: usize = 256 << 20;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 << 10;

/// A connected, authenticated Redis connection.
pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` already decoded.
    rpos: usize,
    wbuf: Vec<u8>,
}

fn down(e: io::Error) -> Error {
    Error::Down(e.to_string())
}

impl Conn {
    /// Connects, authenticates and selects the database, each step bounded by `timeout`.
    pub fn connect(url: &Url, timeout: Duration) -> Result<Conn, Error> {
        let addrs = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| Error::Down(format!("resolve {}: {e}", url.host)))?;
        let mut last = Error::Down(format!("{} resolves to no address", url.host));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(down)?;
                    let mut c = Conn::from_stream(stream, timeout)?;
                    c.handshake(url)?;
                    return Ok(c);
                }
                Err(e) => last = Error::Down(format!("connect {addr}: {e}")),
            }
        }
        Err(last)
    }

    fn from_stream(stream: TcpStream, timeout: Duration) -> Result<Conn, Error> {
        stream.set_read_timeout(Some(timeout)).map_err(down)?;
        stream.set_write_timeout(Some(timeout)).map_err(down)?;
        Ok(Conn {
            stream,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
        })
    }

    fn handshake(&mut self, url: &Url) -> Result<(), Error> {
        let mut cmds = Vec::new();
        if let Some(pw) = &url.password {
            let mut c = Cmd::new("AUTH");
            if let Some(u) = &url.user {
                c.arg(u);
            }
            c.arg(pw);
            cmds.push(c);
        }
        if url.db != 0 {
            cmds.push(Cmd::new("SELECT").with(url.db.to_string()));
        }
        cmds.push(Cmd::new("CLIENT").with("SETNAME").with("tidings"));
        for (cmd, v) in cmds.iter().zip(self.pipeline(&cmds)?) {
            if let Value::Error(e) = v {
                return Err(Error::Reply(format!("{}: {e}", cmd.name())));
            }
        }
        Ok(())
    }

    /// The socket, for a caller that changes its mode (the subscriber makes it non-blocking).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        let rest = self.rbuf[self.rpos..].to_vec();
        (self.stream, rest)
    }

    /// Sends `cmds` in one write and reads one reply each, in order. A Redis error reply is
    /// a `Value::Error` in its place, not a failure; `Err` means the connection is lost.
    pub fn pipeline(&mut self, cmds: &[Cmd]) -> Result<Vec<Value>, Error> {
        self.wbuf.clear();
        for c in cmds {
            c.write_to(&mut self.wbuf);
        }
        self.stream.write_all(&self.wbuf).map_err(down)?;
        let mut out = Vec::with_capacity(cmds.len());
        for _ in cmds {
            out.push(self.recv()?);
        }
        Ok(out)
    }

    /// One command, one reply (a Redis error reply is `Error::Reply`).
    pub fn call(&mut self, cmd: &Cmd) -> Result<Value, Error> {
        match self.pipeline(std::slice::from_ref(cmd))?.pop() {
            Some(Value::Error(e)) => Err(Error::Reply(format!("{}: {e}", cmd.name()))),
            Some(v) => Ok(v),
            None => Err(Error::Protocol("no reply".into())),
        }
    }

    /// Reads the next reply, waiting up to the connection's timeout for each read.
    fn recv(&mut self) -> Result<Value, Error> {
        loop {
            if let Some((v, n)) =
                resp::decode(&self.rbuf[self.rpos..]).map_err(|e| Error::Protocol(e.0))?
            {
                self.rpos += n;
                if self.rpos == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rpos = 0;
                }
                return Ok(v);
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            if self.rbuf.len() > MAX_REPLY {
                return Err(Error::Protocol("reply over 256 MiB".into()));
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + READ_CHUNK, 0);
            let r = self.stream.read(&mut self.rbuf[len..]);
            self.rbuf.truncate(len + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => return Err(Error::Down("Redis closed the connection".into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(down(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 2));
        assert_eq!((u.user, u.password), (None, None));
        let u = Url::parse("redis://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("localhost", 6379, 0));
        let u = Url::parse("redis://:p%40ss@h:1/").unwrap();
        assert_eq!((u.user, u.password.as_deref()), (None, Some("p@ss")));
        let u = Url::parse("redis://alice:x:y@h").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("alice"), Some("x:y"))
        );
        let u = Url::parse("redis://secret@h").unwrap();
        assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
        let u = Url::parse("redis://[::1]:7000/3").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("::1", 7000, 3));
        assert_eq!(u.to_string(), "redis://[::1]:7000/3");
        assert_eq!(
            Url::parse("redis://a:b@h").unwrap().to_string(),
            "redis://a:***@h:6379/0",
            "no password in log lines"
        );
        for bad in [
            "rediss://h",
            "http://h",
            "redis://",
            "redis://h:x",
            "redis://h/x",
            "redis://h:70000",
            "redis://h/0?timeout=1",
            "redis://:%zz@h",
            "redis://[::1",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
