//! Counters aggregated across workers: the final report of `run` and
//! `replay`, and the one-line rate summary `run` prints while it works.

use crate::runtime::Shared;
use dataplane::parser::Malformed;
use dataplane::port::PortStats;
use dataplane::stats::DropReason;
use std::fmt::Write as _;
use std::time::Duration;

/// One stage's counters summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageSnap {
    /// Stage kind (`copy`, ...).
    pub kind: &'static str,
    /// Packets shown to the stage.
    pub input: u64,
    /// Copies passed on.
    pub output: u64,
    /// Copies shed on purpose.
    pub shed: u64,
    /// Copies lost for lack of room.
    pub dropped: u64,
    /// Copies lost to sink errors.
    pub errors: u64,
}

/// One chain's counters summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainSnap {
    /// Chain name.
    pub name: String,
    /// Packets run through the chain.
    pub packets: u64,
    /// Originals dropped by fail-closed.
    pub closed_drops: u64,
    /// Stages in order.
    pub stages: Vec<StageSnap>,
}

/// One sink's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSnap {
    /// Sink name.
    pub name: String,
    /// Copies written.
    pub written: u64,
    /// Write errors.
    pub errors: u64,
    /// Copies discarded while the sink was down.
    pub lost_down: u64,
    /// Copies waiting in the queue.
    pub queued: u64,
}

/// What the watchdog knows about one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSnap {
    /// Whether the worker's ports are with the bypass forwarder now.
    pub bypassing: bool,
    /// Times the bypass forwarder was engaged (`watchdog_bypass_engaged`).
    pub engaged: u64,
    /// Times the ports went back to the worker.
    pub failbacks: u64,
    /// Time in bypass, the current period included.
    pub bypass_time: Duration,
    /// Packets the bypass forwarder carried (`bypassed_packets`): forwarded, never copied.
    pub bypassed_packets: u64,
    /// Stalls during which the worker held its ports (no in-process bypass possible).
    pub stuck_holding_ports: u64,
    /// Last detection time (last heartbeat seen to engagement).
    pub last_detect: Duration,
    /// Last takeover time (engagement to the forwarder's first round with the ports).
    pub last_takeover: Duration,
}

/// Every counter at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Packets received.
    pub rx: u64,
    /// Packets transmitted.
    pub tx: u64,
    /// Packets a rule matched.
    pub matched: u64,
    /// Packets no rule matched.
    pub unmatched: u64,
    /// Packets forwarded unclassified: while the bypass switch was on, or by
    /// a watchdog's bypass forwarder.
    pub bypassed: u64,
    /// Flow cache hits.
    pub cache_hits: u64,
    /// Flow cache misses.
    pub cache_misses: u64,
    /// Malformed packets by reason (only non-zero reasons).
    pub malformed: Vec<(&'static str, u64)>,
    /// Dropped originals by reason (only non-zero reasons).
    pub drops: Vec<(&'static str, u64)>,
    /// Per port: name and counters.
    pub ports: Vec<(String, PortStats)>,
    /// Per port: link state (0 not applicable, 1 up, 2 down).
    pub port_links: Vec<u64>,
    /// Per rule: name, packets, bytes.
    pub rules: Vec<(String, u64, u64)>,
    /// Per chain.
    pub chains: Vec<ChainSnap>,
    /// Per sink.
    pub sinks: Vec<SinkSnap>,
    /// Times a copy found the copy-buffer pool empty.
    pub copy_pool_empty: u64,
    /// MAC-learning bridge counters (all bridges, all workers): learned,
    /// moved, aged, table full, flooded, flood copies, flood copies lost.
    pub bridge: [u64; 7],
    /// Per worker: nanoseconds spent running chains.
    pub monitor_ns: Vec<u64>,
    /// Time since the dataplane started (the monitoring share's denominator).
    pub uptime: Duration,
    /// The configured monitoring budget (share of a worker's time), if any.
    pub monitor_budget: Option<f64>,
    /// Matched packets forwarded without their chain because the budget was spent.
    pub shed_monitor_budget: u64,
    /// Matched packets forwarded without their chain because their port had a backlog.
    pub shed_overload: u64,
    /// Per worker, when the watchdog runs.
    pub watchdog: Vec<WatchSnap>,
}

impl Snapshot {
    /// Reads and sums every worker's counters.
    pub fn take(sh: &Shared) -> Snapshot {
        let mut s = Snapshot::default();
        let mut malformed = [0u64; Malformed::COUNT];
        let mut drops = [0u64; DropReason::COUNT];
        s.ports = sh.names.ports.iter().map(|n| (n.clone(), PortStats::default())).collect();
        s.rules = sh.book.counts();
        for w in &sh.workers {
            s.rx += w.rx.get();
            s.tx += w.tx.get();
            s.matched += w.matched.get();
            s.unmatched += w.unmatched.get();
            s.bypassed += w.bypassed.get();
            s.monitor_ns.push(w.monitor_ns.get());
            s.shed_monitor_budget += w.shed_monitor_budget.get();
            s.shed_overload += w.shed_overload.get();
            s.cache_hits += w.cache_hits.get();
            s.cache_misses += w.cache_misses.get();
            for (acc, c) in malformed.iter_mut().zip(w.malformed.iter()) {
                *acc += c.get();
            }
            for (acc, c) in drops.iter_mut().zip(w.drops.iter()) {
                *acc += c.get();
            }
            s.port_links.resize(s.ports.len(), 0);
            for (acc, c) in s.port_links.iter_mut().zip(w.ports.iter()) {
                *acc = (*acc).max(c.link.get());
            }
            for ((_, acc), c) in s.ports.iter_mut().zip(w.ports.iter()) {
                let p = c.snapshot();
                acc.rx_packets += p.rx_packets;
                acc.rx_bytes += p.rx_bytes;
                acc.rx_dropped += p.rx_dropped;
                acc.tx_packets += p.tx_packets;
                acc.tx_bytes += p.tx_bytes;
                acc.tx_dropped += p.tx_dropped;
            }
        }
        s.malformed =
            Malformed::ALL.iter().zip(malformed).filter(|(_, n)| *n > 0).map(|(m, n)| (m.name(), n)).collect();
        for (id, c) in &sh.tool_ports {
            if let Some((_, acc)) = s.ports.get_mut(*id as usize) {
                *acc = c.snapshot();
            }
        }
        s.chains = sh
            .chain_names
            .iter()
            .enumerate()
            .map(|(ci, name)| {
                let mut c = ChainSnap { name: name.clone(), ..Default::default() };
                c.stages = sh.stage_kinds[ci].iter().map(|k| StageSnap { kind: k, ..Default::default() }).collect();
                for w in &sh.chains {
                    let Some(cs) = w.get(ci) else { continue };
                    c.packets += cs.packets.get();
                    c.closed_drops += cs.closed_drops.get();
                    for (acc, st) in c.stages.iter_mut().zip(cs.stages.iter()) {
                        acc.input += st.input.get();
                        acc.output += st.output.get();
                        acc.shed += st.shed.get();
                        acc.dropped += st.dropped.get();
                        acc.errors += st.errors.get();
                    }
                }
                c
            })
            .collect();
        s.sinks = sh
            .sinks
            .iter()
            .map(|q| SinkSnap {
                name: q.name().to_string(),
                written: q.written(),
                errors: q.errors(),
                lost_down: q.lost_down(),
                queued: q.len() as u64,
            })
            .collect();
        if let Some(wd) = &sh.watchdog {
            use std::sync::atomic::Ordering::Relaxed;
            for (i, x) in wd.workers.iter().enumerate() {
                // What the forwarder carried counts in the totals like any worker's traffic.
                let f = &x.forwarder;
                s.rx += f.rx.get();
                s.tx += f.tx.get();
                s.bypassed += f.rx.get();
                for (acc, c) in drops.iter_mut().zip(f.drops.iter()) {
                    *acc += c.get();
                }
                s.watchdog.push(WatchSnap {
                    bypassing: x.bypassing.load(Relaxed),
                    engaged: x.engagements.load(Relaxed),
                    failbacks: x.failbacks.load(Relaxed),
                    bypass_time: wd.bypass_time(i),
                    bypassed_packets: f.rx.get(),
                    stuck_holding_ports: x.stuck_holding_ports.load(Relaxed),
                    last_detect: Duration::from_nanos(x.last_detect_ns.load(Relaxed)),
                    last_takeover: Duration::from_nanos(x.last_takeover_ns.load(Relaxed)),
                });
            }
        }
        s.drops = DropReason::ALL.iter().zip(drops).filter(|(_, n)| *n > 0).map(|(r, n)| (r.name(), n)).collect();
        s.copy_pool_empty = sh.copy_pool.empty_count();
        s.uptime = sh.started.elapsed();
        s.monitor_budget = sh.monitor_budget;
        for w in &sh.workers {
            let b = &w.bridge;
            let v = [
                b.learned.get(),
                b.moved.get(),
                b.aged.get(),
                b.table_full.get(),
                b.flooded.get(),
                b.flood_copies.get(),
                b.flood_no_buffer.get() + b.flood_too_big.get(),
            ];
            for (acc, x) in s.bridge.iter_mut().zip(v) {
                *acc += x;
            }
        }
        s
    }

    /// Originals dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }

    /// Copies lost anywhere between the stages and the sinks.
    pub fn copies_lost(&self) -> u64 {
        let stages: u64 = self.chains.iter().flat_map(|c| &c.stages).map(|s| s.dropped + s.errors).sum();
        let sinks: u64 = self.sinks.iter().map(|s| s.errors + s.lost_down).sum();
        stages + sinks
    }

    /// Each worker's monitoring share since `prev` (of the time between the
    /// two snapshots): the share of its core its chains took.
    pub fn monitoring_shares(&self, prev: &Snapshot) -> Vec<f64> {
        let dt = self.uptime.saturating_sub(prev.uptime).as_nanos().max(1) as f64;
        let before = |i: usize| prev.monitor_ns.get(i).copied().unwrap_or(0);
        self.monitor_ns.iter().enumerate().map(|(i, &ns)| ns.saturating_sub(before(i)) as f64 / dt).collect()
    }

    /// `monitoring share 12% (worker 0 12%, worker 1 3%)` since `prev`.
    fn monitoring_line(&self, prev: &Snapshot) -> String {
        let shares = self.monitoring_shares(prev);
        let top = shares.iter().copied().fold(0.0, f64::max);
        let mut line = format!("monitoring share {}", pct(top));
        if shares.len() > 1 {
            let each: Vec<String> = shares.iter().enumerate().map(|(i, s)| format!("worker {i} {}", pct(*s))).collect();
            let _ = write!(line, " ({})", each.join(", "));
        }
        line
    }

    /// The one-line summary of rates since `prev`, as testpmd prints them.
    pub fn rate_line(&self, prev: &Snapshot, dt: Duration) -> String {
        let secs = dt.as_secs_f64().max(1e-9);
        let rate = |now: u64, then: u64| fmt_rate(now.saturating_sub(then) as f64 / secs);
        let mut line = format!("rx {} tx {}", rate(self.rx, prev.rx), rate(self.tx, prev.tx));
        for ((name, p), (_, q)) in self.ports.iter().zip(&prev.ports) {
            let _ = write!(
                line,
                " | {name} rx {} tx {}",
                rate(p.rx_packets, q.rx_packets),
                rate(p.tx_packets, q.tx_packets)
            );
        }
        // By name: rules come and go between two summaries.
        let before: std::collections::HashMap<&str, u64> =
            prev.rules.iter().map(|(n, p, _)| (n.as_str(), *p)).collect();
        for (name, n, _) in &self.rules {
            let m = before.get(name.as_str()).copied().unwrap_or(0);
            if *n > m {
                let _ = write!(line, " | rule {name} {}", rate(*n, m));
            }
        }
        let copies: u64 = self.sinks.iter().map(|s| s.written).sum();
        let prev_copies: u64 = prev.sinks.iter().map(|s| s.written).sum();
        let _ = write!(
            line,
            " | copies {} lost {} | dropped {}",
            rate(copies, prev_copies),
            self.copies_lost().saturating_sub(prev.copies_lost()),
            self.dropped().saturating_sub(prev.dropped())
        );
        let shed = |s: &Snapshot| s.shed_monitor_budget + s.shed_overload;
        let _ = write!(line, " | {} shed {}", self.monitoring_line(prev), shed(self).saturating_sub(shed(prev)));
        let bypassing: Vec<String> =
            self.watchdog.iter().enumerate().filter(|(_, w)| w.bypassing).map(|(i, _)| i.to_string()).collect();
        if !bypassing.is_empty() {
            let _ = write!(line, " | watchdog BYPASS worker {}", bypassing.join(", "));
        }
        line
    }

    /// The multi-line final report.
    pub fn report(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "== flowsteer counters ==");
        let _ = writeln!(
            o,
            "{:<24} {:>12} {:>14} {:>9} {:>12} {:>14} {:>9} {:>5}",
            "port", "rx-packets", "rx-bytes", "rx-drop", "tx-packets", "tx-bytes", "tx-drop", "link"
        );
        for (i, (name, p)) in self.ports.iter().enumerate() {
            let link = match self.port_links.get(i) {
                Some(1) => "up",
                Some(2) => "down",
                _ => "-",
            };
            let _ = writeln!(
                o,
                "{:<24} {:>12} {:>14} {:>9} {:>12} {:>14} {:>9} {:>5}",
                name, p.rx_packets, p.rx_bytes, p.rx_dropped, p.tx_packets, p.tx_bytes, p.tx_dropped, link
            );
        }
        let _ = writeln!(o, "{:<24} {:>12} {:>14}", "rule", "packets", "bytes");
        for (name, pk, by) in &self.rules {
            let _ = writeln!(o, "{:<24} {:>12} {:>14}", name, pk, by);
        }
        for c in &self.chains {
            let _ = writeln!(o, "chain {}: packets {} closed-drops {}", c.name, c.packets, c.closed_drops);
            for (i, s) in c.stages.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "  stage {i} {}: in {} out {} shed {} dropped {} errors {}",
                    s.kind, s.input, s.output, s.shed, s.dropped, s.errors
                );
            }
        }
        for s in &self.sinks {
            let _ = writeln!(
                o,
                "sink {}: written {} errors {} lost-down {} queued {}",
                s.name, s.written, s.errors, s.lost_down, s.queued
            );
        }
        let list = |v: &[(&str, u64)]| v.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ");
        let malformed: u64 = self.malformed.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            o,
            "total: rx {} tx {} matched {} unmatched {}{} malformed {}{} dropped {}{}",
            self.rx,
            self.tx,
            self.matched,
            self.unmatched,
            if self.bypassed == 0 { String::new() } else { format!(" bypassed {}", self.bypassed) },
            malformed,
            if self.malformed.is_empty() { String::new() } else { format!(" ({})", list(&self.malformed)) },
            self.dropped(),
            if self.drops.is_empty() { String::new() } else { format!(" ({})", list(&self.drops)) },
        );
        if self.bridge.iter().any(|&x| x > 0) {
            let b = &self.bridge;
            let _ = writeln!(
                o,
                "bridge: learned {} moved {} aged {} table-full {} flooded {} flood-copies {} flood-copies-lost {}",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6]
            );
        }
        let since_start = Snapshot { monitor_ns: vec![0; self.monitor_ns.len()], ..Snapshot::default() };
        let _ = writeln!(
            o,
            "{} (budget {}); chains shed: budget {} overload {}",
            self.monitoring_line(&since_start),
            self.monitor_budget.map_or("none".to_string(), pct),
            self.shed_monitor_budget,
            self.shed_overload
        );
        for (i, w) in self.watchdog.iter().enumerate() {
            let _ = writeln!(
                o,
                "watchdog worker {i}: {} engaged {} fail-backs {} in-bypass {:.1} ms bypassed-packets {} stuck-holding-ports {} (last detection {:.1} ms, takeover {:.2} ms)",
                if w.bypassing { "BYPASS" } else { "ok" },
                w.engaged,
                w.failbacks,
                w.bypass_time.as_secs_f64() * 1e3,
                w.bypassed_packets,
                w.stuck_holding_ports,
                w.last_detect.as_secs_f64() * 1e3,
                w.last_takeover.as_secs_f64() * 1e3
            );
        }
        let _ = writeln!(
            o,
            "copies: lost {} (copy pool empty {}); flow cache: hits {} misses {}",
            self.copies_lost(),
            self.copy_pool_empty,
            self.cache_hits,
            self.cache_misses
        );
        o
    }
}

/// `12%`, `0.4%`: a share as a percentage, one decimal below 10%.
pub fn pct(share: f64) -> String {
    let p = share * 100.0;
    if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// `1.23 Mpps`, `456.0 kpps`, `12 pps`.
pub fn fmt_rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{:.0} pps", pps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_human() {
        assert_eq!(fmt_rate(12_340_000.0), "12.34 Mpps");
        assert_eq!(fmt_rate(4_560.0), "4.6 kpps");
        assert_eq!(fmt_rate(7.0), "7 pps");
    }

    #[test]
    fn rate_line_shows_ports_rules_and_copies() {
        let mut a = Snapshot {
            ports: vec![("a".into(), PortStats::default())],
            rules: vec![("web".into(), 0, 0)],
            ..Default::default()
        };
        a.sinks.push(SinkSnap { name: "cap".into(), ..Default::default() });
        a.monitor_ns = vec![0];
        let mut b = a.clone();
        b.uptime = Duration::from_secs(2);
        b.monitor_ns = vec![500_000_000];
        b.shed_overload = 3;
        b.rx = 2_000_000;
        b.ports[0].1.rx_packets = 2_000_000;
        b.rules[0].1 = 10;
        b.sinks[0].written = 10;
        let line = b.rate_line(&a, Duration::from_secs(2));
        assert_eq!(
            line,
            "rx 1.00 Mpps tx 0 pps | a rx 1.00 Mpps tx 0 pps | rule web 5 pps | copies 5 pps lost 0 | dropped 0 | monitoring share 25% shed 3"
        );
        b.watchdog = vec![WatchSnap::default(), WatchSnap { bypassing: true, ..WatchSnap::default() }];
        assert!(b.rate_line(&a, Duration::from_secs(2)).ends_with(" | watchdog BYPASS worker 1"));
    }
}
