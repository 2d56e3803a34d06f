//! Every counter in the Prometheus text exposition format (0.0.4): one
//! `# HELP` and `# TYPE` per family, counters named `_total`, labels `port`,
//! `rule`, `chain`, `stage`, `sink`, `worker`, `reason`.

use crate::runtime::Shared;
use dataplane::parser::Malformed;
use dataplane::stats::DropReason;
use std::fmt::Write as _;
use std::time::Duration;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A counter family read from a `T`: name, help, getter.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes families: `family(name, type, help)` then samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP flowsteer_{name} {help}\n# TYPE flowsteer_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let _ = write!(self.0, "flowsteer_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    /// One family with one sample per item.
    fn each<T>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        items: &[T],
        mut f: impl FnMut(&T) -> (Vec<(&str, String)>, u64),
    ) {
        self.family(name, kind, help);
        for it in items {
            let (labels, v) = f(it);
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &l, v);
        }
    }
}

/// Renders every counter; `since_progress` is, per worker, the time since it last polled.
pub fn render(sh: &Shared, since_progress: &[Duration]) -> String {
    let s = sh.snapshot();
    let mut o = Out(String::with_capacity(16 * 1024));
    let workers: Vec<(String, &dataplane::stats::WorkerStats)> =
        sh.workers.iter().enumerate().map(|(i, w)| (i.to_string(), &**w)).collect();
    type W<'a> = (String, &'a dataplane::stats::WorkerStats);
    let per_worker: [Family<dataplane::stats::WorkerStats>; 11] = [
        ("rx_packets_total", "Packets received by the worker's ports.", |w| w.rx.get()),
        ("tx_packets_total", "Packets the worker transmitted.", |w| w.tx.get()),
        ("matched_packets_total", "Packets a rule matched.", |w| w.matched.get()),
        ("unmatched_packets_total", "Packets no rule matched (fast path).", |w| w.unmatched.get()),
        ("bypassed_packets_total", "Packets forwarded unclassified while the bypass was on.", |w| w.bypassed.get()),
        ("flow_cache_hits_total", "Flow cache hits.", |w| w.cache_hits.get()),
        ("flow_cache_misses_total", "Flow cache misses (rule set lookups).", |w| w.cache_misses.get()),
        ("busy_polls_total", "Poll rounds that received packets.", |w| w.busy_polls.get()),
        ("idle_polls_total", "Poll rounds that received nothing.", |w| w.idle_polls.get()),
        (
            "shed_monitor_budget_total",
            "Matched packets whose fail-open chains were skipped: monitoring over its budget.",
            |w| w.shed_monitor_budget.get(),
        ),
        ("shed_overload_total", "Matched packets whose fail-open chains were skipped: receive backlog.", |w| {
            w.shed_overload.get()
        }),
    ];
    for (name, help, get) in per_worker {
        o.each(name, "counter", help, &workers, |(id, w): &W| (vec![("worker", id.clone())], get(w)));
    }
    o.each("worker_generation", "gauge", "Rule-set generation the worker runs.", &workers, |(id, w): &W| {
        (vec![("worker", id.clone())], w.generation.get())
    });
    o.family(
        "worker_seconds_since_progress",
        "gauge",
        "Seconds since the worker last completed a poll round (as seen by control).",
    );
    for (i, d) in since_progress.iter().enumerate() {
        o.sample("worker_seconds_since_progress", &[("worker", &i.to_string())], d.as_secs_f64());
    }
    o.family("monitor_seconds_total", "counter", "Time the worker spent running chains (monitoring).");
    for (id, w) in &workers {
        o.sample("monitor_seconds_total", &[("worker", id)], w.monitor_ns.get() as f64 / 1e9);
    }
    if let Some(dog) = &sh.watchdog {
        watchdog(&mut o, dog);
    }
    o.family("dropped_packets_total", "counter", "Original packets dropped, by worker and reason.");
    for (id, w) in &workers {
        for r in DropReason::ALL {
            o.sample("dropped_packets_total", &[("worker", id), ("reason", r.name())], w.drops[r as usize].get());
        }
    }
    o.family("malformed_packets_total", "counter", "Packets whose headers did not parse, by worker and reason.");
    for (id, w) in &workers {
        for m in Malformed::ALL {
            o.sample("malformed_packets_total", &[("worker", id), ("reason", m.name())], w.malformed[m as usize].get());
        }
    }
    type P = (String, dataplane::port::PortStats);
    let port_fams: [Family<dataplane::port::PortStats>; 6] = [
        ("port_rx_packets_total", "Packets the port received.", |p| p.rx_packets),
        ("port_rx_bytes_total", "Bytes the port received.", |p| p.rx_bytes),
        ("port_rx_dropped_total", "Packets the port could not receive.", |p| p.rx_dropped),
        ("port_tx_packets_total", "Packets the port transmitted.", |p| p.tx_packets),
        ("port_tx_bytes_total", "Bytes the port transmitted.", |p| p.tx_bytes),
        ("port_tx_dropped_total", "Packets the port could not transmit.", |p| p.tx_dropped),
    ];
    for (name, help, get) in port_fams {
        o.each(name, "counter", help, &s.ports, |(n, p): &P| (vec![("port", n.clone())], get(p)));
    }
    o.family("port_link_up", "gauge", "1 when the port's link is up, 0 when down (ports with a link state only).");
    for ((n, _), l) in s.ports.iter().zip(&s.port_links) {
        if *l != 0 {
            o.sample("port_link_up", &[("port", n)], u64::from(*l == dataplane::stats::LINK_UP));
        }
    }
    type R = (String, u64, u64);
    o.each(
        "rule_packets_total",
        "counter",
        "Packets the rule matched (kept across rule updates while the name stays).",
        &s.rules,
        |(n, p, _): &R| (vec![("rule", n.clone())], *p),
    );
    o.each("rule_bytes_total", "counter", "Bytes the rule matched.", &s.rules, |(n, _, b): &R| {
        (vec![("rule", n.clone())], *b)
    });
    o.each("chain_packets_total", "counter", "Packets run through the chain.", &s.chains, |c| {
        (vec![("chain", c.name.clone())], c.packets)
    });
    o.each("chain_closed_drops_total", "counter", "Originals a fail-closed chain dropped.", &s.chains, |c| {
        (vec![("chain", c.name.clone())], c.closed_drops)
    });
    let stage_fams: [Family<crate::report::StageSnap>; 5] = [
        ("stage_in_total", "Packets shown to the stage.", |st| st.input),
        ("stage_out_total", "Copies the stage passed on.", |st| st.output),
        ("stage_shed_total", "Copies the stage shed on purpose (sampling, budget, filter, dedup).", |st| st.shed),
        ("stage_dropped_total", "Copies lost for lack of room (no buffer, queue full).", |st| st.dropped),
        ("stage_errors_total", "Copies not made because a sink is down.", |st| st.errors),
    ];
    for (name, help, get) in stage_fams {
        o.family(name, "counter", help);
        for c in &s.chains {
            for (i, st) in c.stages.iter().enumerate() {
                o.sample(name, &[("chain", &c.name), ("stage", st.kind), ("position", &i.to_string())], get(st));
            }
        }
    }
    o.each("sink_written_total", "counter", "Copies the sink wrote.", &s.sinks, |k| {
        (vec![("sink", k.name.clone())], k.written)
    });
    o.each("sink_errors_total", "counter", "Copies lost to write failures.", &s.sinks, |k| {
        (vec![("sink", k.name.clone())], k.errors)
    });
    o.each("sink_lost_down_total", "counter", "Queued copies discarded when the sink went down.", &s.sinks, |k| {
        (vec![("sink", k.name.clone())], k.lost_down)
    });
    o.each("sink_queued", "gauge", "Copies waiting in the sink's queue.", &s.sinks, |k| {
        (vec![("sink", k.name.clone())], k.queued)
    });
    o.each("sink_up", "gauge", "1 when the sink is up, 0 while it is down.", &sh.sinks, |q| {
        (vec![("sink", q.name().to_string())], u64::from(q.is_up()))
    });
    o.family("copy_pool_empty_total", "counter", "Times a copy found the copy-buffer pool empty.");
    o.sample("copy_pool_empty_total", &[], s.copy_pool_empty);
    o.family("rule_generation", "gauge", "Generation of the published rule set.");
    o.sample("rule_generation", &[], sh.table.generation());
    o.family("rules", "gauge", "Rules in the published set.");
    o.sample("rules", &[], s.rules.len());
    o.family("bypass", "gauge", "1 while the bypass switch is on.");
    o.sample("bypass", &[], u64::from(sh.bypass.is_on()));
    o.family("bypass_engaged_total", "counter", "Times the bypass switch was turned on.");
    o.sample("bypass_engaged_total", &[], sh.bypass.engaged());
    o.0
}

/// The worker watchdog's families, per worker.
fn watchdog(o: &mut Out, dog: &dataplane::watchdog::WatchdogState) {
    use std::sync::atomic::Ordering::Relaxed;
    type F = (&'static str, &'static str, &'static str, fn(&dataplane::watchdog::WorkerWatch) -> u64);
    let fams: [F; 4] = [
        ("watchdog_bypassing", "gauge", "1 while the worker's ports are with the bypass forwarder.", |x| {
            u64::from(x.bypassing.load(Relaxed))
        }),
        ("watchdog_engaged_total", "counter", "Times a stalled worker's ports went to the bypass forwarder.", |x| {
            x.engagements.load(Relaxed)
        }),
        ("watchdog_failbacks_total", "counter", "Times the ports went back to the recovered worker.", |x| {
            x.failbacks.load(Relaxed)
        }),
        (
            "watchdog_stuck_holding_ports_total",
            "counter",
            "Stalls the worker held its ports through (no bypass).",
            |x| x.stuck_holding_ports.load(Relaxed),
        ),
    ];
    for (name, kind, help, get) in fams {
        o.family(name, kind, help);
        for (i, x) in dog.workers.iter().enumerate() {
            o.sample(name, &[("worker", &i.to_string())], get(x));
        }
    }
    o.family("watchdog_bypass_seconds_total", "counter", "Time the worker's ports spent with the bypass forwarder.");
    for i in 0..dog.workers.len() {
        o.sample("watchdog_bypass_seconds_total", &[("worker", &i.to_string())], dog.bypass_time(i).as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut o = Out(String::new());
        o.family("x_total", "counter", "An x.");
        o.sample("x_total", &[("rule", "we\"b")], 3);
        assert_eq!(
            o.0,
            "# HELP flowsteer_x_total An x.\n# TYPE flowsteer_x_total counter\nflowsteer_x_total{rule=\"we\\\"b\"} 3\n"
        );
    }
}
