//! Message over XMPP (PROTOCOLS.md 4): the stanza tokenizer and parser, the session machine,
//! SASL, urn:M dispatch, PubSub, the registry of bound JIDs, and BOSH's framing. Sans-io:
//! bytes in, bytes and actions out.

pub mod bosh;
pub mod pubsub;
pub mod registry;
pub mod sasl;
pub mod session;
pub mod stanza;
pub mod tokenizer;
pub mod urn;
