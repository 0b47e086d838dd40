//! QST (Queue State Transfer, v2 with v1 compatibility): PROTOCOLS.md section 1.
//!
//! `xml` and `json` are the sans-io batch codecs: bytes of a push body to drafts, stored
//! messages to the bytes of a pull reply.

pub mod json;
pub mod xml;

/// Why a QST body could not be decoded: a client fault, answered `400` with this text as the
/// `text/plain` body. Only made on the error path, so it may own its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl CodecError {
    pub(crate) fn new(reason: impl Into<String>) -> CodecError {
        CodecError(reason.into())
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}
