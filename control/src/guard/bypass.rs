//! The kernel bypass: what the guard installs between a link's or a
//! bridge's Linux interfaces while the dataplane is down.
//!
//! * **Link** (two interfaces A, B): a `u32` filter matching every frame on
//!   the `clsact` ingress hook of each, with `mirred egress redirect` to the
//!   other. A frame entering A leaves by B and nothing else sees it; the
//!   redirected frame is *outgoing* on B, which the dataplane's packet
//!   sockets ignore, so nothing loops. (`matchall` would be the natural
//!   classifier but is not built into every kernel; `u32` with one
//!   zero-mask key is, and costs one comparison.)
//! * **Bridge** (several interfaces): a Linux bridge the guard creates at
//!   start, empty and up; on failure each interface is enslaved to it (one
//!   netlink message each, in the same batch). tc cannot learn MACs: a
//!   mirred "hub" to every other port would hand each VM every other VM's
//!   unicast traffic, which a monitoring product must never do. The Linux
//!   bridge learns and forwards like the dataplane's bridge (STP off, so
//!   ports forward at once; the ageing time is the bridge's). Its MAC table
//!   starts empty, so the first frames to each destination are flooded, as
//!   on any switch after a restart.
//!
//! Everything goes to the kernel as one batch ([`super::netlink::Route::batch`]).
//! Installing is idempotent (filters at the guard's priority are deleted
//! first, enslaving a port twice is harmless) and so is removing (absent
//! filters and released ports are not errors), so a guard that restarts with
//! a bypass of its predecessor in place simply takes it over.
//!
//! The guard owns ingress filter priority [`PRIO`] on the interfaces of
//! links, and the bridges named `fsg-<bridge>`.

use super::netlink::{self, Refused, Request, Route};
use super::GuardError;
use std::time::Duration;

/// The tc filter priority the guard's redirects use on link interfaces.
pub const PRIO: u16 = 1;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
/// Errors a removal may meet when there was nothing to remove (no such
/// filter, no clsact qdisc, no such device).
const NOTHING_THERE: [i32; 3] = [ENOENT, 22, 19];

/// A forwarding segment the guard can bypass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Two interfaces joined back to back.
    Link {
        /// One interface.
        a: String,
        /// The other.
        b: String,
    },
    /// Interfaces joined by a learning bridge.
    Bridge {
        /// The Linux bridge the guard creates (`fsg-<name>`).
        linux: String,
        /// Its interfaces.
        ports: Vec<String>,
        /// MAC ageing.
        ageing: Duration,
    },
}

/// The bypass of every segment, ready to install.
pub struct KernelBypass {
    segments: Vec<Segment>,
    route: Route,
    /// Per segment: the interface indexes (link: a, b; bridge: the bridge, then its ports).
    index: Vec<Vec<u32>>,
    /// Interfaces whose clsact qdisc the guard created (removed again at exit).
    own_clsact: Vec<u32>,
    /// Bridges the guard created (deleted again at exit).
    own_bridges: Vec<u32>,
}

/// The interface index of `name`, from sysfs.
pub fn ifindex(name: &str) -> Result<u32, GuardError> {
    let bad = || GuardError::Interface { name: name.to_string(), message: "no such interface".into() };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(bad());
    }
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).map_err(|_| bad())?;
    s.trim().parse().map_err(|_| bad())
}

impl KernelBypass {
    /// Opens the routing socket; nothing is changed yet.
    pub fn new(segments: Vec<Segment>) -> Result<KernelBypass, GuardError> {
        let route = Route::open().map_err(|e| GuardError::Io { what: "netlink socket".into(), source: e })?;
        Ok(KernelBypass { segments, route, index: Vec::new(), own_clsact: Vec::new(), own_bridges: Vec::new() })
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Resolves the interfaces, adds a clsact qdisc to every link interface
    /// and creates every bridge (up, no ports). Called at start and whenever
    /// a dataplane connects (a VM's interface may have been re-created with a
    /// new index); what exists already is kept.
    pub fn prepare(&mut self) -> Result<(), GuardError> {
        let mut index = Vec::with_capacity(self.segments.len());
        let segments = std::mem::take(&mut self.segments);
        let r = self.prepare_each(&segments, &mut index);
        self.segments = segments;
        r?;
        self.index = index;
        Ok(())
    }

    fn prepare_each(&mut self, segments: &[Segment], index: &mut Vec<Vec<u32>>) -> Result<(), GuardError> {
        for s in segments {
            match s {
                Segment::Link { a, b } => {
                    let (ia, ib) = (ifindex(a)?, ifindex(b)?);
                    for i in [ia, ib] {
                        match self.one(netlink::add_clsact(i))? {
                            Ok(()) => self.own_clsact.push(i),
                            Err(r) if r.errno == EEXIST => {}
                            Err(r) => return Err(refused(&netlink::add_clsact(i), r)),
                        }
                    }
                    index.push(vec![ia, ib]);
                }
                Segment::Bridge { linux, ports, ageing } => {
                    let req = netlink::add_bridge(linux, *ageing);
                    let created = match self.one(req.clone())? {
                        Ok(()) => true,
                        Err(r) if r.errno == EEXIST => false,
                        Err(r) => return Err(refused(&req, r)),
                    };
                    let br = ifindex(linux)?;
                    if !std::path::Path::new(&format!("/sys/class/net/{linux}/bridge")).exists() {
                        return Err(GuardError::Interface {
                            name: linux.clone(),
                            message: "exists and is not a bridge; the guard needs this name for its bypass bridge"
                                .into(),
                        });
                    }
                    if created {
                        self.own_bridges.push(br);
                        // The bypass bridge is a switch, not a host: no IPv6 of its own.
                        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{linux}/disable_ipv6"), "1");
                    }
                    if let Err(r) = self.one(netlink::set_up(br))? {
                        return Err(refused(&netlink::set_up(br), r));
                    }
                    let mut ix = vec![br];
                    for p in ports {
                        ix.push(ifindex(p)?);
                    }
                    index.push(ix);
                }
            }
        }
        Ok(())
    }

    fn one(&mut self, req: Request) -> Result<Result<(), Refused>, GuardError> {
        let mut out = self
            .route
            .batch(std::slice::from_ref(&req))
            .map_err(|e| GuardError::Io { what: req.what().to_string(), source: e })?;
        Ok(out.pop().unwrap_or(Ok(())))
    }

    /// Installs the bypass of every segment, in one batch. Every request is
    /// tried; the ones the kernel refused are returned (to be logged: a
    /// partial bypass still carries what it can).
    pub fn install(&mut self) -> Result<Vec<String>, GuardError> {
        let mut reqs = Vec::new();
        let mut optional = Vec::new();
        for (s, ix) in self.segments.iter().zip(&self.index) {
            match s {
                Segment::Link { .. } => {
                    for (from, to) in [(ix[0], ix[1]), (ix[1], ix[0])] {
                        optional.push(reqs.len());
                        reqs.push(netlink::del_filters(from, PRIO));
                        reqs.push(netlink::add_redirect(from, PRIO, to));
                    }
                }
                Segment::Bridge { .. } => {
                    for &p in &ix[1..] {
                        reqs.push(netlink::set_master(p, ix[0]));
                    }
                }
            }
        }
        self.run(&reqs, &optional)
    }

    /// Removes the bypass of every segment, in one batch (what is already
    /// gone is not an error). Returns the refused requests.
    pub fn remove(&mut self) -> Result<Vec<String>, GuardError> {
        let mut reqs = Vec::new();
        for (s, ix) in self.segments.iter().zip(&self.index) {
            match s {
                Segment::Link { .. } => {
                    reqs.push(netlink::del_filters(ix[0], PRIO));
                    reqs.push(netlink::del_filters(ix[1], PRIO));
                }
                Segment::Bridge { .. } => {
                    for &p in &ix[1..] {
                        reqs.push(netlink::set_master(p, 0));
                    }
                }
            }
        }
        let all: Vec<usize> = (0..reqs.len()).collect();
        self.run(&reqs, &all)
    }

    /// Removes everything the guard made: the bypass, the clsact qdiscs and
    /// the bridges it created. Returns the refused requests.
    pub fn teardown(&mut self) -> Result<Vec<String>, GuardError> {
        let mut failed = self.remove()?;
        let mut reqs: Vec<Request> = self.own_clsact.drain(..).map(netlink::del_clsact).collect();
        reqs.extend(self.own_bridges.drain(..).map(netlink::del_link));
        let all: Vec<usize> = (0..reqs.len()).collect();
        failed.extend(self.run(&reqs, &all)?);
        Ok(failed)
    }

    /// Removes a bypass and bridges left by an earlier guard as well as what
    /// this one made (clsact qdiscs that existed before are left: empty, they
    /// change nothing).
    pub fn teardown_all(&mut self) -> Result<Vec<String>, GuardError> {
        for (s, ix) in self.segments.iter().zip(&self.index) {
            if let Segment::Bridge { .. } = s {
                if !self.own_bridges.contains(&ix[0]) {
                    self.own_bridges.push(ix[0]);
                }
            }
        }
        self.teardown()
    }

    /// Sends `reqs` as one batch; refusals of the requests at `tolerant`
    /// indexes that only say "nothing there" are not failures.
    fn run(&mut self, reqs: &[Request], tolerant: &[usize]) -> Result<Vec<String>, GuardError> {
        let out = self.route.batch(reqs).map_err(|e| GuardError::Io { what: "netlink batch".into(), source: e })?;
        let mut failed = Vec::new();
        for (i, (r, o)) in reqs.iter().zip(out).enumerate() {
            if let Err(e) = o {
                if tolerant.contains(&i) && NOTHING_THERE.contains(&e.errno) {
                    continue;
                }
                failed.push(format!("{}: {e}", r.what()));
            }
        }
        Ok(failed)
    }
}

fn refused(req: &Request, r: Refused) -> GuardError {
    GuardError::Netlink { what: req.what().to_string(), message: r.to_string() }
}
