//! Fixtures shared by the criterion benchmarks and the throughput harness:
//! pre-built frames across many flows and the rules the scenarios use.

use dataplane::classifier::{Action, Match, PortRange, Rule};
use dataplane::flow::{proto, MacAddr};
use dataplane::wire::build::PacketBuilder;
use std::net::Ipv4Addr;

/// Frame length of the harness packets (without FCS), as testpmd's `--txpkts=64`.
pub const FRAME_LEN: usize = 64;

/// UDP destination port of every tenth flow (the "10% steered" scenario).
pub const STEERED_PORT: u16 = 1000;

/// One 64-byte UDP/IPv4 frame per flow, `n` distinct flows. Flow `i` has
/// destination port `STEERED_PORT + i % 10`, so a rule on `STEERED_PORT`
/// matches exactly a tenth of the flows.
pub fn flows(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let i = i as u32;
            let src = Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff));
            let dst = Ipv4Addr::new(10, 200, (i % 251) as u8, 1 + (i % 13) as u8);
            PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
                .ipv4(src, dst)
                .udp(1024 + (i % 50_000) as u16, STEERED_PORT + (i % 10) as u16)
                .pad_to(FRAME_LEN)
                .build()
        })
        .collect()
}

fn copy_rule(name: &str, matches: Match) -> Rule {
    Rule { name: name.into(), priority: 10, matches, symmetric: false, action: Action::Chain(0) }
}

/// Matches a tenth of the harness flows (UDP to `STEERED_PORT`) and copies them.
pub fn rule_copy_tenth() -> Rule {
    copy_rule(
        "copy",
        Match { proto: Some(proto::UDP), dst_port: Some(PortRange::single(STEERED_PORT)), ..Match::default() },
    )
}

/// Matches every harness flow and copies it.
pub fn rule_copy_all() -> Rule {
    copy_rule("copy", Match { proto: Some(proto::UDP), ..Match::default() })
}

/// Matches none of the harness flows (TCP), so every packet is classified and takes the fast path.
pub fn rule_matching_nothing() -> Rule {
    copy_rule("copy", Match { proto: Some(proto::TCP), dst_port: Some(PortRange::single(5432)), ..Match::default() })
}
