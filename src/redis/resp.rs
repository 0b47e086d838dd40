//! RESP2, the bytes between a Redis client and server: commands out, replies in.
//!
//! A command is always an array of bulk strings (`*N\r\n` then `$LEN\r\nBYTES\r\n` per
//! argument), which `Cmd` writes straight into one buffer with no frame values in between.
//! Replies are decoded by `redis-protocol` (`decode` below), which says how many bytes one
//! whole reply took, or that more bytes are needed. Pure code: no sockets.
//!
//! ```text
//! reply  = simple / error / integer / bulk / array
//! simple = "+" line          error = "-" line          integer = ":" [-]digits CRLF
//! bulk   = "$" len CRLF bytes CRLF / "$-1" CRLF          array = "*" n CRLF reply* / "*-1" CRLF
//! ```

use redis_protocol::resp2::decode::decode as decode_frame;
use redis_protocol::resp2::types::OwnedFrame;

/// One reply, as `redis-protocol` decodes it.
pub type Value = OwnedFrame;

/// One command, encoded as it is built.
#[derive(Clone, Debug, Default)]
pub struct Cmd {
    /// How many arguments: the array's head is written in front of `body` by `write_to`.
    args: usize,
    /// The arguments, encoded.
    body: Vec<u8>,
}

impl Cmd {
    /// A command named `name` (`"XRANGE"`), with no arguments yet.
    pub fn new(name: &str) -> Cmd {
        let mut c = Cmd::default();
        c.arg(name);
        c
    }

    /// Appends one argument (any bytes).
    pub fn arg(&mut self, a: impl AsRef<[u8]>) -> &mut Cmd {
        let a = a.as_ref();
        self.body.push(b'$');
        self.body
            .extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self.body.extend_from_slice(a);
        self.body.extend_from_slice(b"\r\n");
        self.args += 1;
        self
    }

    /// Appends one integer argument, in decimal.
    pub fn int(&mut self, n: impl itoa::Integer) -> &mut Cmd {
        let mut b = itoa::Buffer::new();
        let s = b.format(n).to_owned();
        self.arg(s)
    }

    /// Builder form of `arg`.
    pub fn with(mut self, a: impl AsRef<[u8]>) -> Cmd {
        self.arg(a);
        self
    }

    /// The command's name (its first argument), for error messages.
    pub fn name(&self) -> &str {
        // The body starts `$LEN\r\nNAME\r\n`.
        let start = self
            .body
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = self.body[start..]
            .iter()
            .position(|&b| b == b'\r')
            .map_or(start, |i| start + i);
        std::str::from_utf8(&self.body[start..end]).unwrap_or("?")
    }

    /// Appends the whole command's bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(self.args).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The whole command's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 16);
        self.write_to(&mut out);
        out
    }
}

/// A reply that cannot be decoded: the connection is out of step and must be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Decodes the first whole reply in `buf`: the reply and the bytes it took, `Ok(None)` when
/// `buf` holds only part of one.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, Malformed> {
    decode_frame(buf).map_err(|e| Malformed(e.to_string()))
}

/// The bytes of a bulk or simple string reply.
pub fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) | Value::SimpleString(b) => Some(b),
        _ => None,
    }
}

/// An integer reply, or a string reply holding a decimal integer (Lua numbers come back as
/// integers, strings stored in keys as bulk strings).
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(n) => Some(*n),
        _ => std::str::from_utf8(as_bytes(v)?).ok()?.parse().ok(),
    }
}

/// As `as_int`, for values that cannot be negative (seqs, counts).
pub fn as_u64(v: &Value) -> Option<u64> {
    u64::try_from(as_int(v)?).ok()
}

/// The elements of an array reply (a null array is empty).
pub fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) => Some(a),
        Value::Null => Some(&[]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut c = Cmd::new("SET");
        c.arg("k").arg(b"v\r\n").int(-12i64);
        assert_eq!(
            c.bytes(),
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$3\r\n-12\r\n"
        );
        assert_eq!(c.name(), "SET");
        assert_eq!(Cmd::new("PING").bytes(), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            Cmd::new("GET").with("").bytes(),
            b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn replies_table() {
        type Case = (&'static [u8], Option<(Value, usize)>);
        let cases: &[Case] = &[
            (b"+OK\r\n", Some((Value::SimpleString(b"OK".to_vec()), 5))),
            (b"-ERR no\r\n", Some((Value::Error("ERR no".into()), 9))),
            (b":-7\r\n", Some((Value::Integer(-7), 5))),
            (
                b"$3\r\na\r\n\r\n",
                Some((Value::BulkString(b"a\r\n".to_vec()), 9)),
            ),
            (b"$-1\r\n", Some((Value::Null, 5))),
            (
                b"*2\r\n:1\r\n$1\r\nx\r\n+rest",
                Some((
                    Value::Array(vec![Value::Integer(1), Value::BulkString(b"x".to_vec())]),
                    15,
                )),
            ),
            (b"*2\r\n:1\r\n", None),
            (b"$5\r\nab", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                &decode(bytes).unwrap(),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(decode(b"?what\r\n").is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(as_int(&Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(as_u64(&Value::Integer(-1)), None);
        assert_eq!(as_array(&Value::Null), Some(&[][..]));
        assert_eq!(as_bytes(&Value::Integer(1)), None);
    }

    proptest::proptest! {
        /// Every split of an encoded array of bulk strings decodes to the same reply once the
        /// whole of it is there, and to "need more" before.
        #[test]
        fn prefixes_need_more(args in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20), 1..6)) {
            let mut c = Cmd::new("X");
            for a in &args {
                c.arg(a);
            }
            let bytes = c.bytes();
            for cut in 0..bytes.len() {
                proptest::prop_assert_eq!(decode(&bytes[..cut]).unwrap(), None);
            }
            let (v, n) = decode(&bytes).unwrap().unwrap();
            proptest::prop_assert_eq!(n, bytes.len());
            let mut want = vec![Value::BulkString(b"X".to_vec())];
            want.extend(args.into_iter().map(Value::BulkString));
            proptest::prop_assert_eq!(v, Value::Array(want));
        }
    }
}
