//! HTTP/1.1 over a unix socket, the transport of `purple-supervisor serve`
//! (docs/api.md): a small, bounded server side and the client the CLI uses.

pub mod client;
pub mod server;
mod wire;
