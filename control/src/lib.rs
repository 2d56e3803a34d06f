//! flowsteer control: the YAML configuration, its compilation into the
//! dataplane's and the chains' structures, and the `flowsteer` commands.
#![deny(unsafe_code)]

pub mod api;
pub mod client;
pub mod compile;
pub mod config;
pub mod dpdk;
pub mod guard;
pub mod heartbeat;
pub mod live;
pub mod reload;
pub mod report;
pub mod rules;
pub mod runtime;
pub mod sched;
