//! PLACEHOLDER: replaced by the pcap port backend.
