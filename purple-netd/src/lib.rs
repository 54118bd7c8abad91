//! purple-netd: gives each sandbox that asks for `network.mode = "filtered"`
//! a veth pair and nftables rules, with CAP_NET_ADMIN and nothing else.
//!
//! The rules are computed as data first ([`nft`], from a validated
//! [`plan`]), the current kernel state is read as data ([`state`]), and what
//! is stale is a pure function of it ([`reconcile`]); only [`host`] and
//! [`daemon`] act. See docs/network.md.

pub mod cli;
pub mod daemon;
pub mod host;
pub mod ident;
pub mod log;
pub mod netns;
pub mod nft;
pub mod plan;
pub mod ports;
pub mod privs;
pub mod reconcile;
pub mod state;
