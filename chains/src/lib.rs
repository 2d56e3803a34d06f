//! flowsteer service chains: the stages a steered packet's copies go through
//! and the sinks that receive them.
//!
//! A chain is a value ([`ChainSpec`]): a name, a failure policy and an
//! ordered list of stages. [`ChainSet`] is one worker's runtime form of all
//! chains and implements the dataplane's [`dataplane::worker::Chains`]. Copies
//! leave the worker through bounded lock-free [`sink::SinkQueue`]s and are
//! written by [`sink::SinkThread`]s, never on a worker core: a slow or broken
//! sink loses copies (counted), never originals.
#![deny(unsafe_code)]

pub mod chain;
pub mod sink;
pub mod stage;

pub use chain::{ChainSet, ChainSpec, ChainStats, OnFailure};
