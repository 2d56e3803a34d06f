//! flowsteer service chains: the stages a steered packet's copy goes through
//! and the sinks that receive copies.
#![deny(unsafe_code)]

pub mod sink;
