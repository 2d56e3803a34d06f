//! PLACEHOLDER: replaced by the real parser.
use crate::flow::FlowKey;
use crate::packet::PortId;
/// Why a packet is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Malformed { Truncated }
impl Malformed {
    /// n
    pub const COUNT: usize = 1;
    /// all
    pub const ALL: [Malformed; 1] = [Malformed::Truncated];
    /// name
    pub fn name(self) -> &'static str { "truncated" }
}
/// Parses a frame.
pub fn parse(_frame: &[u8], in_port: PortId) -> (FlowKey, Option<Malformed>) {
    (FlowKey { in_port, ..FlowKey::default() }, None)
}
