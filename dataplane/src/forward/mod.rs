//! Forwarding: where an original goes after classification.
//!
//! Two kinds, side by side in one [`Forwarding`] value:
//!
//! * [`Links`]: bump-in-the-wire pairs, what enters one port leaves by the
//!   other with no lookup (the fast path);
//! * bridges ([`BridgeConfig`]): MAC-learning switches over several VM ports,
//!   so traffic among many VMs works without one link per pair.
//!
//! A port belongs to at most one link or one bridge; a port in neither has
//! no egress (its packets are counted as `no_egress` drops). Steering and
//! chains run before forwarding and do not depend on its kind.

mod bridge;
mod links;

pub(crate) use bridge::{Bridge, Decision};
pub use bridge::{BridgeConfig, DEFAULT_AGEING, DEFAULT_TABLE_SIZE};
pub use links::{LinkError, Links};

use crate::packet::PortId;

/// Why a forwarding configuration is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardingError {
    /// The links themselves are invalid.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A bridge names a port that does not exist.
    #[error("bridge {bridge}: port {port} does not exist")]
    NoSuchPort {
        /// Index of the bridge.
        bridge: usize,
        /// The missing port.
        port: PortId,
    },
    /// A bridge with fewer than two ports forwards nothing.
    #[error("bridge {bridge} has {ports} port(s); a bridge needs at least two")]
    TooFewPorts {
        /// Index of the bridge.
        bridge: usize,
        /// Its number of distinct ports.
        ports: usize,
    },
    /// A port is in a link and a bridge, in two bridges, or twice in one bridge.
    #[error("port {port} is in bridge {bridge} and already in another link or bridge (or twice in this one)")]
    PortReused {
        /// Index of the bridge where the port appears again.
        bridge: usize,
        /// The port.
        port: PortId,
    },
    /// A bridge's MAC table has no room at all.
    #[error("bridge {0} has a MAC table of size 0")]
    ZeroTableSize(usize),
    /// Flood copies need at least one buffer able to hold a frame header.
    #[error("the flood pool needs at least one buffer of at least 64 bytes (got {buffers} x {size})")]
    BadFloodPool {
        /// Buffers asked for.
        buffers: usize,
        /// Size of each.
        size: usize,
    },
}

/// What a port does with the originals it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// In no link or bridge: originals are dropped as `no_egress`.
    None,
    /// In a link: originals leave by the peer.
    Link(PortId),
    /// In the bridge with this index (into [`Forwarding::bridges`]).
    Bridge(usize),
}

/// Buffers each worker with a bridge takes for flood copies, by default.
pub const DEFAULT_FLOOD_BUFFERS: usize = 1024;
/// Size of each flood buffer, by default: a standard frame with VLAN tags.
/// Larger frames are flooded to one port only (counted as `flood_too_big`).
pub const DEFAULT_FLOOD_BUFFER_SIZE: usize = 2048;

/// Every port's forwarding: links and bridges over disjoint port sets.
///
/// Validated once at construction; workers read it when they are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    links: Links,
    bridges: Vec<BridgeConfig>,
    role: Vec<PortRole>,
    flood_buffers: usize,
    flood_buffer_size: usize,
}

impl Forwarding {
    /// Links and bridges over the port table the links were built over
    /// ([`Links::port_count`] ports).
    pub fn new(links: Links, bridges: Vec<BridgeConfig>) -> Result<Forwarding, ForwardingError> {
        let n = links.port_count();
        let mut role: Vec<PortRole> =
            (0..n).map(|p| links.peer(p as PortId).map_or(PortRole::None, PortRole::Link)).collect();
        for (b, cfg) in bridges.iter().enumerate() {
            if cfg.table_size == 0 {
                return Err(ForwardingError::ZeroTableSize(b));
            }
            for &port in &cfg.ports {
                match role.get_mut(port as usize) {
                    None => return Err(ForwardingError::NoSuchPort { bridge: b, port }),
                    Some(r @ PortRole::None) => *r = PortRole::Bridge(b),
                    Some(_) => return Err(ForwardingError::PortReused { bridge: b, port }),
                }
            }
            if cfg.ports.len() < 2 {
                return Err(ForwardingError::TooFewPorts { bridge: b, ports: cfg.ports.len() });
            }
        }
        Ok(Forwarding {
            links,
            bridges,
            role,
            flood_buffers: DEFAULT_FLOOD_BUFFERS,
            flood_buffer_size: DEFAULT_FLOOD_BUFFER_SIZE,
        })
    }

    /// Sizes the pool each worker with a bridge takes its flood copies from
    /// (allocated once, when the worker is built). Copies beyond what the
    /// pool holds are not made (counted); the original always goes out.
    pub fn with_flood_pool(mut self, buffers: usize, size: usize) -> Result<Forwarding, ForwardingError> {
        if buffers == 0 || size < 64 {
            return Err(ForwardingError::BadFloodPool { buffers, size });
        }
        self.flood_buffers = buffers;
        self.flood_buffer_size = size;
        Ok(self)
    }

    /// The links.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The bridges, in the order given.
    pub fn bridges(&self) -> &[BridgeConfig] {
        &self.bridges
    }

    /// What `port` does with its originals.
    #[inline]
    pub fn role(&self, port: PortId) -> PortRole {
        self.role.get(port as usize).copied().unwrap_or(PortRole::None)
    }

    /// Flood pool: buffers per worker and the size of each.
    pub fn flood_pool(&self) -> (usize, usize) {
        (self.flood_buffers, self.flood_buffer_size)
    }
}

impl From<Links> for Forwarding {
    fn from(links: Links) -> Forwarding {
        let role = (0..links.port_count()).map(|p| links.peer(p as PortId).map_or(PortRole::None, PortRole::Link));
        Forwarding {
            role: role.collect(),
            links,
            bridges: Vec::new(),
            flood_buffers: DEFAULT_FLOOD_BUFFERS,
            flood_buffer_size: DEFAULT_FLOOD_BUFFER_SIZE,
        }
    }
}

impl From<&Links> for Forwarding {
    fn from(links: &Links) -> Forwarding {
        Forwarding::from(links.clone())
    }
}

impl From<&Forwarding> for Forwarding {
    fn from(fwd: &Forwarding) -> Forwarding {
        fwd.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn links_and_bridges_share_the_port_table() {
        let links = Links::new(6, &[(0, 1)]).unwrap();
        let f = Forwarding::new(links, vec![BridgeConfig::new(vec![2, 3, 4])]).unwrap();
        assert_eq!(f.role(0), PortRole::Link(1));
        assert_eq!(f.role(3), PortRole::Bridge(0));
        assert_eq!(f.role(5), PortRole::None);
        assert_eq!(f.role(99), PortRole::None);
        assert_eq!(f.bridges()[0].ageing, Duration::from_secs(300));
        assert_eq!(f.bridges()[0].table_size, 4096);
        assert_eq!(Forwarding::from(Links::new(2, &[(0, 1)]).unwrap()).role(1), PortRole::Link(0));
    }

    #[test]
    fn bad_forwarding_is_refused() {
        let links = || Links::new(4, &[(0, 1)]).unwrap();
        let b = |p: Vec<PortId>| BridgeConfig::new(p);
        assert_eq!(
            Forwarding::new(links(), vec![b(vec![1, 2])]),
            Err(ForwardingError::PortReused { bridge: 0, port: 1 })
        );
        assert_eq!(
            Forwarding::new(links(), vec![b(vec![2, 3]), b(vec![3, 2])]),
            Err(ForwardingError::PortReused { bridge: 1, port: 3 })
        );
        assert_eq!(
            Forwarding::new(links(), vec![b(vec![2, 2])]),
            Err(ForwardingError::PortReused { bridge: 0, port: 2 })
        );
        assert_eq!(
            Forwarding::new(links(), vec![b(vec![2])]),
            Err(ForwardingError::TooFewPorts { bridge: 0, ports: 1 })
        );
        assert_eq!(
            Forwarding::new(links(), vec![b(vec![2, 7])]),
            Err(ForwardingError::NoSuchPort { bridge: 0, port: 7 })
        );
        let tiny = BridgeConfig { table_size: 0, ..b(vec![2, 3]) };
        assert_eq!(Forwarding::new(links(), vec![tiny]), Err(ForwardingError::ZeroTableSize(0)));
        assert!(Forwarding::from(links()).with_flood_pool(0, 2048).is_err());
    }
}
