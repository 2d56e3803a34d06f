//! rtnetlink messages for the guard's kernel bypass, built by hand.
//!
//! The guard needs seven requests: add/delete a `clsact` qdisc, add/delete
//! a `u32` filter whose action is `mirred egress redirect`, create/delete a
//! bridge and set an interface's master. Building them as bytes (a header,
//! a fixed struct, type-length-value attributes, nests) is shorter than a
//! general netlink crate and lets a whole bypass go to the kernel as one
//! batch: one `send(2)` for every message, then the acknowledgements. That
//! is what keeps a failover in the hundreds of microseconds; four `tc`
//! processes took 16 ms on the lab machine.
//!
//! The equivalent commands, for operators reading `tc`/`ip` output:
//!
//! ```text
//! tc qdisc add dev A clsact
//! tc filter add dev A ingress prio P protocol all u32 match u32 0 0 \
//!     action mirred egress redirect dev B
//! tc filter del dev A ingress prio P protocol all
//! ip link add NAME type bridge ageing_time T; ip link set NAME up
//! ip link set A master NAME / nomaster
//! ```

use super::sys::RouteSocket;
use std::fmt;
use std::io;
use std::time::Duration;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
/// Flags of an error message: the request was cut to its header / TLVs follow.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;

const NLA_F_NESTED: u16 = 0x8000;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_U32_TERMINAL: u8 = 1;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;
/// `clsact`'s handle (`ffff:`), its parent (`TC_H_CLSACT`) and its ingress hook (`ffff:fff2`).
const CLSACT_HANDLE: u32 = 0xffff_0000;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const CLSACT_INGRESS: u32 = 0xffff_fff2;
/// `ETH_P_ALL` in network byte order, as the low half of `tcm_info`.
const PROTO_ALL: u32 = 0x0003u16.to_be() as u32;

const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BR_AGEING_TIME: u16 = 4;
const IFF_UP: u32 = 1;

/// One request, built in place: header, fixed struct, attributes.
#[derive(Debug, Clone)]
pub(super) struct Request {
    buf: Vec<u8>,
    nests: Vec<usize>,
    /// What the request does, for error messages (`tc filter add dev 7 ...`).
    what: String,
}

impl Request {
    fn new(kind: u16, flags: u16, what: String) -> Request {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `bytes`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by `bytes`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        Request { buf, nests: Vec::new(), what }
    }

    fn tc(kind: u16, flags: u16, ifindex: u32, handle: u32, parent: u32, info: u32, what: String) -> Request {
        let mut r = Request::new(kind, flags, what);
        r.buf.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, padding
        r.buf.extend_from_slice(&ifindex.to_ne_bytes());
        r.buf.extend_from_slice(&handle.to_ne_bytes());
        r.buf.extend_from_slice(&parent.to_ne_bytes());
        r.buf.extend_from_slice(&info.to_ne_bytes());
        r
    }

    fn link(kind: u16, flags: u16, ifindex: u32, ifi_flags: u32, change: u32, what: String) -> Request {
        let mut r = Request::new(kind, flags, what);
        r.buf.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, padding, type
        r.buf.extend_from_slice(&ifindex.to_ne_bytes());
        r.buf.extend_from_slice(&ifi_flags.to_ne_bytes());
        r.buf.extend_from_slice(&change.to_ne_bytes());
        r
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Request {
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Request {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    fn begin(&mut self, kind: u16) -> &mut Request {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Request {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// The finished message with sequence number `seq`.
    fn bytes(&self, seq: u32) -> Vec<u8> {
        let mut b = self.buf.clone();
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
        b
    }

    /// What the request does, as `tc`/`ip` would say it.
    pub(super) fn what(&self) -> &str {
        &self.what
    }
}

/// `tc qdisc add dev IF clsact` (fails with `EEXIST` when there is one).
pub(super) fn add_clsact(ifindex: u32) -> Request {
    let mut r = Request::tc(
        RTM_NEWQDISC,
        NLM_F_CREATE | NLM_F_EXCL,
        ifindex,
        CLSACT_HANDLE,
        TC_H_CLSACT,
        0,
        format!("tc qdisc add dev #{ifindex} clsact"),
    );
    r.attr_str(TCA_KIND, "clsact");
    r
}

/// `tc qdisc del dev IF clsact`.
pub(super) fn del_clsact(ifindex: u32) -> Request {
    Request::tc(RTM_DELQDISC, 0, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0, format!("tc qdisc del dev #{ifindex} clsact"))
}

/// `tc filter add dev FROM ingress prio P protocol all u32 match u32 0 0
/// action mirred egress redirect dev TO`: every frame entering `from` leaves by `to`.
pub(super) fn add_redirect(from: u32, prio: u16, to: u32) -> Request {
    let mut r = Request::tc(
        RTM_NEWTFILTER,
        NLM_F_CREATE | NLM_F_EXCL,
        from,
        0,
        CLSACT_INGRESS,
        u32::from(prio) << 16 | PROTO_ALL,
        format!(
            "tc filter add dev #{from} ingress prio {prio} u32 match u32 0 0 action mirred egress redirect dev #{to}"
        ),
    );
    // One key that matches everything: mask 0, value 0, offset 0.
    let mut sel = [0u8; 32];
    sel[0] = TC_U32_TERMINAL;
    sel[2] = 1; // nkeys
    let mut mirred = Vec::with_capacity(28);
    for v in [0u32, 0] {
        mirred.extend_from_slice(&v.to_ne_bytes()); // index, capab
    }
    for v in [TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR] {
        mirred.extend_from_slice(&v.to_ne_bytes()); // action, refcnt, bindcnt, eaction
    }
    mirred.extend_from_slice(&to.to_ne_bytes());
    r.attr_str(TCA_KIND, "u32");
    r.begin(TCA_OPTIONS).attr(TCA_U32_SEL, &sel);
    r.begin(TCA_U32_ACT).begin(1).attr_str(TCA_ACT_KIND, "mirred");
    r.begin(TCA_ACT_OPTIONS).attr(TCA_MIRRED_PARMS, &mirred).end();
    r.end().end().end();
    r
}

/// `tc filter del dev IF ingress prio P protocol all` (every filter at that priority).
pub(super) fn del_filters(ifindex: u32, prio: u16) -> Request {
    Request::tc(
        RTM_DELTFILTER,
        0,
        ifindex,
        0,
        CLSACT_INGRESS,
        u32::from(prio) << 16 | PROTO_ALL,
        format!("tc filter del dev #{ifindex} ingress prio {prio}"),
    )
}

/// `ip link add NAME type bridge ageing_time T` (fails with `EEXIST` when it exists).
pub(super) fn add_bridge(name: &str, ageing: Duration) -> Request {
    let mut r =
        Request::link(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, 0, 0, format!("ip link add {name} type bridge"));
    // The bridge counts ageing in clock ticks of USER_HZ (100 per second).
    let ticks = (ageing.as_millis() / 10).min(u128::from(u32::MAX)) as u32;
    r.attr_str(IFLA_IFNAME, name);
    r.begin(IFLA_LINKINFO).attr_str(IFLA_INFO_KIND, "bridge");
    r.begin(IFLA_INFO_DATA).attr(IFLA_BR_AGEING_TIME, &ticks.to_ne_bytes()).end();
    r.end();
    r
}

/// `ip link set IF up`.
pub(super) fn set_up(ifindex: u32) -> Request {
    Request::link(RTM_NEWLINK, 0, ifindex, IFF_UP, IFF_UP, format!("ip link set #{ifindex} up"))
}

/// `ip link set IF master M`, or `nomaster` when `master` is 0.
pub(super) fn set_master(ifindex: u32, master: u32) -> Request {
    let what = if master == 0 {
        format!("ip link set #{ifindex} nomaster")
    } else {
        format!("ip link set #{ifindex} master #{master}")
    };
    let mut r = Request::link(RTM_NEWLINK, 0, ifindex, 0, 0, what);
    r.attr(IFLA_MASTER, &master.to_ne_bytes());
    r
}

/// `ip link del IF`.
pub(super) fn del_link(ifindex: u32) -> Request {
    Request::link(RTM_DELLINK, 0, ifindex, 0, 0, format!("ip link del #{ifindex}"))
}

/// A request the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    /// The positive errno.
    pub errno: i32,
    /// The kernel's extended-acknowledgement text, when it sent one.
    pub text: Option<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(t) = &self.text {
            write!(f, " ({t})")?;
        }
        Ok(())
    }
}

/// A routing socket that sends batches of requests.
pub(super) struct Route {
    sock: RouteSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Route {
    /// Opens the routing socket.
    pub(super) fn open() -> io::Result<Route> {
        Ok(Route { sock: RouteSocket::open(Duration::from_secs(2))?, seq: 1, buf: vec![0; 65536] })
    }

    /// Sends `reqs` in one batch and waits for every acknowledgement; the
    /// kernel carries on after a refused request. Returns each request's
    /// outcome, in order; `Err` only when the socket itself fails.
    pub(super) fn batch(&mut self, reqs: &[Request]) -> io::Result<Vec<Result<(), Refused>>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.seq;
        let mut out = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            out.extend_from_slice(&r.bytes(first.wrapping_add(i as u32)));
        }
        self.seq = first.wrapping_add(reqs.len() as u32);
        self.sock.send(&out)?;
        let mut results: Vec<Option<Result<(), Refused>>> = vec![None; reqs.len()];
        let mut left = reqs.len();
        while left > 0 {
            let n = self.sock.recv(&mut self.buf)?;
            for (seq, outcome) in acks(&self.buf[..n]) {
                let i = seq.wrapping_sub(first) as usize;
                if let Some(slot @ None) = results.get_mut(i) {
                    *slot = Some(outcome);
                    left -= 1;
                }
            }
        }
        Ok(results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect())
    }
}

/// The acknowledgements (sequence number, outcome) in one datagram.
fn acks(mut b: &[u8]) -> Vec<(u32, Result<(), Refused>)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let flags = u16::from_ne_bytes([b[6], b[7]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        if len < 16 || len > b.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            let err = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
            if err == 0 {
                out.push((seq, Ok(())));
            } else {
                out.push((seq, Err(Refused { errno: -err, text: ack_text(&b[..len], flags) })));
            }
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// The `NLMSGERR_ATTR_MSG` text of an error message, if any.
fn ack_text(msg: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || msg.len() < 36 {
        return None;
    }
    // After the header and the errno: the request's header, and its body unless capped.
    let orig_len = u32::from_ne_bytes([msg[20], msg[21], msg[22], msg[23]]) as usize;
    let mut at = 20 + if flags & NLM_F_CAPPED != 0 { 16 } else { (orig_len + 3) & !3 };
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & !NLA_F_NESTED;
        if len < 4 || at + len > msg.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let s = &msg[at + 4..at + len];
            let s = s.split(|&c| c == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        at += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn a_redirect_filter_is_the_message_tc_sends() {
        let b = add_redirect(7, 1, 9).bytes(42);
        assert_eq!(u32_at(&b, 0) as usize, b.len());
        assert_eq!(u16_at(&b, 4), RTM_NEWTFILTER);
        assert_eq!(u16_at(&b, 6), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        assert_eq!(u32_at(&b, 8), 42);
        // tcmsg: ifindex 7, handle 0, parent ffff:fff2, info prio 1 / ETH_P_ALL (network order).
        assert_eq!(u32_at(&b, 20), 7);
        assert_eq!(u32_at(&b, 24), 0);
        assert_eq!(u32_at(&b, 28), 0xffff_fff2);
        assert_eq!(u32_at(&b, 32), 1 << 16 | u32::from(0x0003u16.to_be()));
        // TCA_KIND "u32\0", then TCA_OPTIONS nested with the 32-byte selector first.
        assert_eq!((u16_at(&b, 36), u16_at(&b, 38)), (8, TCA_KIND));
        assert_eq!(&b[40..44], b"u32\0");
        assert_eq!(u16_at(&b, 46), TCA_OPTIONS | NLA_F_NESTED);
        assert_eq!(u16_at(&b, 44) as usize, b.len() - 44, "the options nest runs to the end");
        assert_eq!((u16_at(&b, 48), u16_at(&b, 50)), (36, TCA_U32_SEL));
        assert_eq!(b[52], TC_U32_TERMINAL);
        assert_eq!(b[54], 1, "one key");
        assert!(b[56..84].iter().all(|&x| x == 0), "the key matches every frame");
        // The mirred parameters end the message: STOLEN, egress redirect, to ifindex 9.
        let parms = &b[b.len() - 28..];
        assert_eq!((u16_at(&b, b.len() - 32), u16_at(&b, b.len() - 30)), (32, TCA_MIRRED_PARMS));
        assert_eq!(i32::from_ne_bytes(parms[8..12].try_into().unwrap()), TC_ACT_STOLEN);
        assert_eq!(i32::from_ne_bytes(parms[20..24].try_into().unwrap()), TCA_EGRESS_REDIR);
        assert_eq!(u32::from_ne_bytes(parms[24..28].try_into().unwrap()), 9);
        assert!(b.windows(7).any(|w| w == b"mirred\0"));
    }

    #[test]
    fn set_master_carries_the_master_index() {
        let b = set_master(5, 11).bytes(1);
        assert_eq!(u16_at(&b, 4), RTM_NEWLINK);
        assert_eq!(u32_at(&b, 20), 5);
        assert_eq!((u16_at(&b, 32), u16_at(&b, 34)), (8, IFLA_MASTER));
        assert_eq!(u32_at(&b, 36), 11);
        assert_eq!(b.len(), 40);
    }

    #[test]
    fn acknowledgements_are_matched_to_requests_with_the_kernel_text() {
        // Two acks in one datagram: seq 3 fine, seq 4 refused with EEXIST and a message.
        let mut d = Vec::new();
        let ok = |seq: u32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m.extend_from_slice(&NLM_F_CAPPED.to_ne_bytes());
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&0i32.to_ne_bytes());
            m.extend_from_slice(&[0; 16]);
            m
        };
        d.extend(ok(3));
        let mut e = ok(4);
        e[6..8].copy_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        e[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        e.extend_from_slice(&12u16.to_ne_bytes());
        e.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        e.extend_from_slice(b"exists\0\0");
        let len = e.len() as u32;
        e[0..4].copy_from_slice(&len.to_ne_bytes());
        d.extend(e);
        let got = acks(&d);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (3, Ok(())));
        assert_eq!(got[1], (4, Err(Refused { errno: 17, text: Some("exists".into()) })));
        assert!(got[1].1.clone().unwrap_err().to_string().contains("exists"));
    }
}
