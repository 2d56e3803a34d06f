//! Sinks: where copies end up. Each sink runs on a sink thread, never on a
//! worker core, and is fed through a bounded lock-free queue.

pub mod erspan;
pub mod gre;
pub mod pcapng;
pub mod port;
mod queue;
pub mod remote;
mod thread;
pub mod vxlan;

pub use queue::SinkQueue;
pub use thread::SinkThread;

use arc_swap::ArcSwap;
use dataplane::classifier::{ChainId, RuleId};
use dataplane::packet::Packet;
use std::sync::Arc;

/// One copy on its way to a sink.
#[derive(Debug)]
pub struct CopyRecord {
    /// The copied bytes, with the original's metadata (ingress port,
    /// timestamp, original length).
    pub pkt: Packet,
    /// The counter slot of the rule that steered the original (its
    /// identity across rule-set updates; see [`Names::rule`]).
    pub rule: RuleId,
    /// The chain that made the copy.
    pub chain: ChainId,
}

/// Names for the ids inside [`CopyRecord`]s, so sinks can label what they write.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Port names indexed by port id.
    pub ports: Vec<String>,
    /// Rule names indexed by counter slot; control changes them as rules
    /// come and go.
    pub rules: RuleNames,
    /// Chain names indexed by chain id.
    pub chains: Vec<String>,
}

impl Names {
    /// The name of port `id`, or `port<id>` when unknown.
    pub fn port(&self, id: u16) -> std::borrow::Cow<'_, str> {
        match self.ports.get(id as usize) {
            Some(n) => n.as_str().into(),
            None => format!("port{id}").into(),
        }
    }

    /// The name of chain `id`, or `chain<id>` when unknown.
    pub fn chain(&self, id: ChainId) -> std::borrow::Cow<'_, str> {
        match self.chains.get(id as usize) {
            Some(n) => n.as_str().into(),
            None => format!("chain{id}").into(),
        }
    }

    /// The name of the rule with counter slot `id` (`rule<id>` when unknown),
    /// as it is at this moment.
    pub fn rule(&self, id: RuleId) -> RuleName {
        RuleName { names: self.rules.0.load_full(), id }
    }
}

/// Rule names by counter slot, shared by control (which changes them when
/// rules are added or removed while the dataplane runs) and the sink threads
/// (which label copies with them). A slot's name changes only after no
/// worker can count under the slot's previous rule any more.
#[derive(Debug, Default)]
pub struct RuleNames(ArcSwap<Vec<String>>);

impl RuleNames {
    /// Replaces every name.
    pub fn set(&self, names: Vec<String>) {
        self.0.store(Arc::new(names));
    }

    /// The names now, by slot.
    pub fn get(&self) -> Arc<Vec<String>> {
        self.0.load_full()
    }
}

impl Clone for RuleNames {
    fn clone(&self) -> Self {
        RuleNames(ArcSwap::new(self.0.load_full()))
    }
}

impl From<Vec<String>> for RuleNames {
    fn from(names: Vec<String>) -> Self {
        RuleNames(ArcSwap::from_pointee(names))
    }
}

/// One rule's name, for formatting ([`Names::rule`]).
pub struct RuleName {
    names: Arc<Vec<String>>,
    id: RuleId,
}

impl std::fmt::Display for RuleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.names.get(self.id as usize) {
            Some(n) => f.write_str(n),
            None => write!(f, "rule{}", self.id),
        }
    }
}

/// Why a sink could not take a copy.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed (disk full, file removed, ...).
    #[error("{sink}: {source}")]
    Io {
        /// The sink's name.
        sink: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The capture library refused a block.
    #[error("{sink}: {message}")]
    Format {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        message: String,
    },
}

/// A destination for copies. Called only from its sink thread.
pub trait Sink: Send {
    /// The sink's name (for logs and counters).
    fn name(&self) -> &str;
    /// Writes one copy.
    fn write(&mut self, rec: &CopyRecord, names: &Names) -> Result<(), SinkError>;
    /// Pushes buffered copies to their destination (called when the queue
    /// runs empty and at shutdown).
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Copies the sink dropped itself since the last call while staying
    /// healthy (a tool port's TX ring momentarily full, a copy too big for
    /// it): counted as lost, without marking the sink down. Called after
    /// each successful flush.
    fn take_lost(&mut self) -> u64 {
        0
    }
}
