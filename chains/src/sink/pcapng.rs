//! PLACEHOLDER: replaced by the pcapng sink.
