//! Chains: a configured value ([`ChainSpec`]) and one worker's runtime form
//! of all of them ([`ChainSet`]).

use crate::sink::SinkQueue;
use crate::stage::budget::Budget;
use crate::stage::copy::CopyStage;
use crate::stage::dedup::Dedup;
use crate::stage::filter::Filter;
use crate::stage::sample::Sample;
use crate::stage::slice::Slice;
use crate::stage::strip::Strip;
use crate::stage::{CopyPlan, StageCounters, StageIn, StageSpec};
use dataplane::classifier::{ChainId, RuleId};
use dataplane::flow::FlowKey;
use dataplane::packet::{Packet, Pool, ShareLimit};
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
    Slice(Slice),
    Sample(Sample),
    Filter(Filter),
    Dedup(Dedup),
    Strip(Strip),
    Budget(Budget),
    #[cfg(feature = "chaos")]
    Stall(crate::stage::stall::Stall),
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
    /// Builds the runtime chains of worker `worker` of `workers` (budgets are
    /// split evenly between workers). `sinks` is the sink table the specs' sink
    /// indices refer to; `pool` provides copy buffers.
    pub fn new(
        specs: &[ChainSpec],
        sinks: &[Arc<SinkQueue>],
        pool: &Arc<Pool>,
        worker: usize,
        workers: usize,
    ) -> ChainSet {
        let chains = specs
            .iter()
            .map(|spec| {
                let stages = spec
                    .stages
                    .iter()
                    .map(|s| match s {
                        StageSpec::Slice { snaplen } => Stage::Slice(Slice::new(*snaplen)),
                        StageSpec::Sample { one_in, per_flow, seed } => {
                            Stage::Sample(Sample::new(*one_in, *per_flow, *seed, worker))
                        }
                        StageSpec::Filter { matches } => Stage::Filter(Filter::new(matches.clone())),
                        StageSpec::Dedup { window_ns } => Stage::Dedup(Dedup::new(*window_ns)),
                        StageSpec::Strip { layers } => Stage::Strip(Strip::new(layers.clone())),
                        StageSpec::Budget { pps, bps } => Stage::Budget(Budget::new(*pps, *bps, workers.max(1) as u32)),
                        #[cfg(feature = "chaos")]
                        StageSpec::Stall { after, ms } => Stage::Stall(crate::stage::stall::Stall::new(*after, *ms)),
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

    /// Lets every `copy` stage make whole-packet copies of mbuf-backed
    /// originals as refcount clones, bounded by `limit` (shared by all
    /// workers: it is what keeps sinks from holding the receive pool).
    pub fn with_share_limit(mut self, limit: &Arc<ShareLimit>) -> ChainSet {
        for c in &mut self.chains {
            for s in &mut c.stages {
                if let Stage::Copy(copy) = s {
                    copy.set_share_limit(Arc::clone(limit));
                }
            }
        }
        self
    }

    /// Counters of every chain, by chain id (shared with control).
    pub fn stats(&self) -> Vec<Arc<ChainStats>> {
        self.chains.iter().map(|c| Arc::clone(&c.stats)).collect()
    }
}

impl Chains for ChainSet {
    #[inline]
    fn run(&mut self, chain: ChainId, rule: RuleId, pkt: &Packet, key: &FlowKey, now_ns: u64) -> ChainVerdict {
        let Some(c) = self.chains.get_mut(chain as usize) else {
            return ChainVerdict::Forward;
        };
        c.stats.packets.add(1);
        let input = StageIn { pkt, key, rule, chain, now_ns };
        let mut plan = CopyPlan::default();
        let mut sinks_down = 0;
        for (stage, counters) in c.stages.iter_mut().zip(c.stats.stages.iter()) {
            if !plan.keep {
                break;
            }
            match stage {
                Stage::Slice(s) => s.process(&input, &mut plan, counters),
                Stage::Sample(s) => s.process(&input, &mut plan, counters),
                Stage::Filter(s) => s.process(&input, &mut plan, counters),
                Stage::Dedup(s) => s.process(&input, &mut plan, counters),
                Stage::Strip(s) => s.process(&input, &mut plan, counters),
                Stage::Budget(s) => s.process(&input, &mut plan, counters),
                #[cfg(feature = "chaos")]
                Stage::Stall(s) => s.process(&input, &mut plan, counters),
                Stage::Copy(s) => sinks_down += s.process(&input, &plan, counters).sinks_down,
            }
        }
        if sinks_down > 0 && c.on_failure == OnFailure::FailClosed {
            c.stats.closed_drops.add(1);
            return ChainVerdict::Drop;
        }
        ChainVerdict::Forward
    }

    /// Fail-open chains may be skipped to bound monitoring; fail-closed ones never are.
    #[inline]
    fn sheddable(&self, chain: ChainId) -> bool {
        !matches!(self.chains.get(chain as usize), Some(c) if c.on_failure == OnFailure::FailClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::FlowKey;
    use dataplane::packet::Meta;

    fn pkt() -> Packet {
        Packet::from_slice(&[0xab; 100], Meta { port: 1, ts_ns: 0, orig_len: 0 })
    }

    #[test]
    fn copies_reach_every_sink_with_metadata() {
        let pool = Pool::new(8, 2048);
        let sinks = vec![Arc::new(SinkQueue::new("a", 4)), Arc::new(SinkQueue::new("b", 4))];
        let spec = ChainSpec {
            name: "c".into(),
            on_failure: OnFailure::FailOpen,
            stages: vec![StageSpec::Copy { to: vec![0, 1] }],
        };
        let mut set = ChainSet::new(&[spec], &sinks, &pool, 0, 1);
        assert_eq!(set.run(0, 7, &pkt(), &FlowKey::default(), 1234), ChainVerdict::Forward);
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
        let spec = ChainSpec {
            name: "c".into(),
            on_failure: OnFailure::FailOpen,
            stages: vec![StageSpec::Copy { to: vec![0] }],
        };
        let mut set = ChainSet::new(&[spec], &sinks, &pool, 0, 1);
        for _ in 0..5 {
            assert_eq!(set.run(0, 0, &pkt(), &FlowKey::default(), 1), ChainVerdict::Forward);
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
        let spec = ChainSpec {
            name: "c".into(),
            on_failure: OnFailure::FailClosed,
            stages: vec![StageSpec::Copy { to: vec![0] }],
        };
        let mut set = ChainSet::new(std::slice::from_ref(&spec), &sinks, &pool, 0, 1);
        sinks[0].set_up(false);
        assert_eq!(set.run(0, 0, &pkt(), &FlowKey::default(), 1), ChainVerdict::Drop);
        let mut open = ChainSet::new(&[ChainSpec { on_failure: OnFailure::FailOpen, ..spec }], &sinks, &pool, 0, 1);
        assert_eq!(open.run(0, 0, &pkt(), &FlowKey::default(), 1), ChainVerdict::Forward);
        sinks[0].set_up(true);
        assert_eq!(set.run(0, 0, &pkt(), &FlowKey::default(), 1), ChainVerdict::Forward);
    }
}
