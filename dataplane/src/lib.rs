//! The flowsteer dataplane: packet buffers, ports and their backends, the
//! header parser, the steering-rule classifier, forwarding and the poll-mode
//! worker.
//!
//! The dataplane knows nothing about YAML or about what a chain does with a
//! packet: rules arrive as compiled [`classifier::RuleSet`]s and chains are
//! reached through the [`worker::Chains`] trait.
//!
//! `unsafe` is denied everywhere but in the buffer module ([`packet`]),
//! where each block carries a `// SAFETY:` note.
#![deny(unsafe_code)]

pub mod bypass;
pub mod cache;
pub mod classifier;
pub mod flow;
pub mod forward;
pub mod handover;
pub mod monitor;
pub mod packet;
pub mod parser;
pub mod port;
pub mod publish;
pub mod stats;
pub mod watchdog;
pub mod wire;
pub mod worker;

/// Packets per receive/transmit burst. Fixed, as in DPDK's l2fwd: every
/// per-burst array in the worker is sized by it, so nothing is allocated per burst.
pub const BURST: usize = 32;
