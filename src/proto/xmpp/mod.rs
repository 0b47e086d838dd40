//! Message over XMPP (PROTOCOLS.md 4): the stanza tokenizer, the stanza parser, and (to come)
//! the session machine, SASL and urn:M dispatch. Sans-io: bytes in, bytes and actions out.

pub mod pubsub;
pub mod registry;
pub mod sasl;
pub mod session;
pub mod stanza;
pub mod tokenizer;
pub mod urn;
