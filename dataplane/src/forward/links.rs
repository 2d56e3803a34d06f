//! Links: bump-in-the-wire pairs. What enters one port leaves by the other,
//! untouched, with no lookup at all: the fast path.

use crate::packet::PortId;

/// Why a set of links is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// A port is linked to itself.
    #[error("port {0} is linked to itself")]
    SelfLink(PortId),
    /// A port appears in two links.
    #[error("port {0} is in more than one link")]
    TwoLinks(PortId),
    /// A link names a port that does not exist.
    #[error("port {0} does not exist")]
    NoSuchPort(PortId),
}

/// Port pairs: the peer of every linked port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    peer: Vec<Option<PortId>>,
}

impl Links {
    /// Links between the given pairs, over a port table of `ports` ports.
    pub fn new(ports: usize, pairs: &[(PortId, PortId)]) -> Result<Links, LinkError> {
        let mut peer = vec![None; ports];
        for &(a, b) in pairs {
            if a == b {
                return Err(LinkError::SelfLink(a));
            }
            for p in [a, b] {
                match peer.get(p as usize) {
                    None => return Err(LinkError::NoSuchPort(p)),
                    Some(Some(_)) => return Err(LinkError::TwoLinks(p)),
                    Some(None) => {}
                }
            }
            peer[a as usize] = Some(b);
            peer[b as usize] = Some(a);
        }
        Ok(Links { peer })
    }

    /// The port a packet received on `port` leaves by.
    #[inline]
    pub fn peer(&self, port: PortId) -> Option<PortId> {
        self.peer.get(port as usize).copied().flatten()
    }

    /// Size of the port table the links were built over.
    pub fn port_count(&self) -> usize {
        self.peer.len()
    }

    /// The pairs, each once, lower id first.
    pub fn pairs(&self) -> Vec<(PortId, PortId)> {
        self.peer
            .iter()
            .enumerate()
            .filter_map(|(a, p)| p.filter(|&b| (a as PortId) < b).map(|b| (a as PortId, b)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_symmetric() {
        let l = Links::new(4, &[(0, 1), (3, 2)]).unwrap();
        assert_eq!(l.peer(0), Some(1));
        assert_eq!(l.peer(1), Some(0));
        assert_eq!(l.peer(2), Some(3));
        assert_eq!(l.pairs(), vec![(0, 1), (2, 3)]);
        assert_eq!(l.peer(9), None);
    }

    #[test]
    fn bad_links_are_refused() {
        assert_eq!(Links::new(2, &[(0, 0)]), Err(LinkError::SelfLink(0)));
        assert_eq!(Links::new(3, &[(0, 1), (1, 2)]), Err(LinkError::TwoLinks(1)));
        assert_eq!(Links::new(2, &[(0, 5)]), Err(LinkError::NoSuchPort(5)));
    }
}
