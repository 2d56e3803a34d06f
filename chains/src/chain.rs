//! Chains: a configured value ([`ChainSpec`]) and one worker's runtime form
//! of all of them ([`ChainSet`]).

use crate::sink::SinkQueue;
use crate::stage::copy::CopyStage;
use crate::stage::{StageCounters, StageSpec};
use dataplane::classifier::{ChainId, RuleId};
use dataplane::packet::{Packet, Pool};
use dataplane::stats::Counter;
use dataplane::worker::{ChainVerdict, Chains};
use std::sync::Arc;

/// What happens to a chain's originals when it cannot monitor them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Copies are lost (counted); originals keep flowing.
    #[default]
    FailOpen,
    /// Originals are dropped while a sink of the chain is down.
    FailClosed,
}

/// A chain as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSpec {
    /// Name, used by rules and in counters.
    pub name: String,
    /// Failure policy.
    pub on_failure: OnFailure,
    /// Stages in order.
    pub stages: Vec<StageSpec>,
}

/// One worker's counters for one chain.
#[derive(Debug, Default)]
pub struct ChainStats {
    /// Packets the chain was run on.
    pub packets: Counter,
    /// Originals dropped because the chain is fail-closed and could not copy them.
    pub closed_drops: Counter,
    /// Per stage, in chain order.
    pub stages: Box<[StageCounters]>,
}

enum Stage {
    Copy(CopyStage),
}

struct Chain {
    on_failure: OnFailure,
    stages: Vec<Stage>,
    stats: Arc<ChainStats>,
}

/// One worker's chains, indexed by [`ChainId`].
pub struct ChainSet {
    chains: Vec<Chain>,
}

impl ChainSet {
    /// Builds the runtime chains of one worker. `sinks` is the sink table the
    /// specs' sink indices refer to; `pool` provides copy buffers.
    pub fn new(specs: &[ChainSpec], sinks: &[Arc<SinkQueue>], pool: &Arc<Pool>) -> ChainSet {
        let chains = specs
            .iter()
            .map(|spec| {
                let stages = spec
                    .stages
                    .iter()
                    .map(|s| match s {
                        StageSpec::Copy { to } => Stage::Copy(CopyStage::new(
                            to.iter().filter_map(|&i| sinks.get(i).cloned()).collect(),
                            Arc::clone(pool),
                        )),
                    })
                    .collect::<Vec<_>>();
                let stats = Arc::new(ChainStats {
                    packets: Counter::default(),
                    closed_drops: Counter::default(),
                    stages: (0..stages.len()).map(|_| StageCounters::default()).collect(),
                });
                Chain { on_failure: spec.on_failure, stages, stats }
            })
            .collect();
        ChainSet { chains }
    }

    /// Counters of every chain, by chain id (shared with control).
    pub fn stats(&self) -> Vec<Arc<ChainStats>> {
        self.chains.iter().map(|c| Arc::clone(&c.stats)).collect()
    }
}

impl Chains for ChainSet {
    #[inline]
    fn run(&mut self, chain: ChainId, rule: RuleId, pkt: &Packet, now_ns: u64) -> ChainVerdict {
        let Some(c) = self.chains.get_mut(chain as usize) else {
            return ChainVerdict::Forward;
        };
        c.stats.packets.add(1);
        let mut sinks_down = 0;
        for (i, stage) in c.stages.iter_mut().enumerate() {
            let Some(counters) = c.stats.stages.get(i) else { break };
            match stage {
                Stage::Copy(s) => {
                    let o = s.process(pkt, rule, chain, now_ns, usize::MAX, counters);
                    sinks_down += o.sinks_down;
                }
            }
        }
        if sinks_down > 0 && c.on_failure == OnFailure::FailClosed {
            c.stats.closed_drops.add(1);
            return ChainVerdict::Drop;
        }
        ChainVerdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::packet::Meta;

    fn pkt() -> Packet {
        Packet::from_slice(&[0xab; 100], Meta { port: 1, ts_ns: 0, orig_len: 0 })
    }

    #[test]
    fn copies_reach_every_sink_with_metadata() {
        let pool = Pool::new(8, 2048);
        let sinks = vec![Arc::new(SinkQueue::new("a", 4)), Arc::new(SinkQueue::new("b", 4))];
        let spec = ChainSpec { name: "c".into(), on_failure: OnFailure::FailOpen, stages: vec![StageSpec::Copy { to: vec![0, 1] }] };
        let mut set = ChainSet::new(&[spec], &sinks, &pool);
        assert_eq!(set.run(0, 7, &pkt(), 1234), ChainVerdict::Forward);
        for q in &sinks {
            let rec = q.pop().expect("a copy per sink");
            assert_eq!(rec.pkt.data(), &[0xab; 100]);
            assert_eq!((rec.rule, rec.chain, rec.pkt.meta.port, rec.pkt.meta.ts_ns), (7, 0, 1, 1234));
        }
        let st = &set.stats()[0];
        assert_eq!((st.packets.get(), st.stages[0].output.get()), (1, 2));
    }

    #[test]
    fn full_queue_and_empty_pool_drop_copies_not_originals() {
        let pool = Pool::new(3, 2048);
        let sinks = vec![Arc::new(SinkQueue::new("a", 2))];
        let spec = ChainSpec { name: "c".into(), on_failure: OnFailure::FailOpen, stages: vec![StageSpec::Copy { to: vec![0] }] };
        let mut set = ChainSet::new(&[spec], &sinks, &pool);
        for _ in 0..5 {
            assert_eq!(set.run(0, 0, &pkt(), 1), ChainVerdict::Forward);
        }
        let st = &set.stats()[0].stages[0];
        assert_eq!((st.input.get(), st.output.get(), st.dropped.get()), (5, 2, 3));
        // The dropped copies' buffers went back to the pool; the queued ones hold theirs.
        assert_eq!(pool.available(), 1);
    }

    #[test]
    fn fail_closed_drops_originals_while_a_sink_is_down() {
        let pool = Pool::new(4, 2048);
        let sinks = vec![Arc::new(SinkQueue::new("a", 4))];
        let spec = ChainSpec { name: "c".into(), on_failure: OnFailure::FailClosed, stages: vec![StageSpec::Copy { to: vec![0] }] };
        let mut set = ChainSet::new(std::slice::from_ref(&spec), &sinks, &pool);
        sinks[0].set_up(false);
        assert_eq!(set.run(0, 0, &pkt(), 1), ChainVerdict::Drop);
        let mut open = ChainSet::new(&[ChainSpec { on_failure: OnFailure::FailOpen, ..spec }], &sinks, &pool);
        assert_eq!(open.run(0, 0, &pkt(), 1), ChainVerdict::Forward);
        sinks[0].set_up(true);
        assert_eq!(set.run(0, 0, &pkt(), 1), ChainVerdict::Forward);
    }
}
