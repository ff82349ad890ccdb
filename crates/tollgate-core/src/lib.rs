//! Domain types and rules of Tollgate, free of I/O so that every other crate can share
//! them: the API key format, money, ids, the OpenAI-shaped error, models and usage events.

pub mod audit;
pub mod ephemeral;
pub mod error;
pub mod ids;
pub mod key;
pub mod model;
pub mod money;
pub mod scope;
pub mod secret;
pub mod tenancy;
pub mod time;
pub mod usage;

pub use error::{ApiError, ErrorCode};
pub use money::MicroUsd;
pub use secret::Secret;

/// The TCP peer of a connection, set by the server's accept loop on every request.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);
