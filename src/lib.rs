//! tidings: a small, fast message relay for HTTP clients that must hear about new messages at
//! once. It speaks QST, the Simple Comet Protocol and Talk streams over one shared hub of
//! channels, from a hand-rolled `mio` reactor (see `DESIGN.md` in the project notes).
//!
//! The layers, top down: [`server`] starts the workers ([`reactor`]), each drives its
//! connections ([`conn`]); a parsed request ([`http`]) becomes an action in [`proto`], which
//! reads and writes the [`hub`], which logs its changes to [`storage`] (`--data-dir`).
//! [`status`] is the live snapshot behind the status page.

pub mod log;

pub mod config;
pub mod conn;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod proto;
pub mod reactor;
pub mod redis;
pub mod server;
pub mod status;
pub mod storage;
pub mod store;
pub mod sync;
pub mod time;
pub mod worker;

pub use config::Config;
pub use hub::{Draft, Message};
pub use server::{Handle, Server};
