//! Reloading the rules from the configuration file while the dataplane runs.
//!
//! Triggers: SIGHUP, a change of the file (polled every
//! [`WATCH_INTERVAL`]: modification time, size, inode), `POST /reload` and
//! `flowsteer reload`. A reload reads, parses and compiles the whole file
//! exactly as `flowsteer check` does, then hands the rules to
//! [`RuleBook::apply`]. Only rules change at run time: when another section
//! (ports, links, bridges, sinks, chains, dataplane, control) differs from the
//! running one, the reload is refused and names the section. A refused
//! reload — a located error in the file, a section that needs a restart —
//! leaves the running rules as they are.

use crate::compile::{compile, ControlPlan, Plan};
use crate::config::load;
use crate::rules::{Applied, ApplyError, RuleBook, RuleOp};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the file is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The parts of a plan a reload may not change, in the order they are checked.
#[derive(Debug, PartialEq)]
struct Fixed {
    ports: Vec<crate::compile::PortPlan>,
    links: dataplane::forward::Links,
    bridges: Vec<crate::compile::BridgePlan>,
    sinks: Vec<crate::compile::SinkPlan>,
    chains: Vec<chains::ChainSpec>,
    dataplane: (Vec<crate::compile::WorkerPlan>, usize, usize, dataplane::worker::MalformedPolicy, usize, usize),
    control: ControlPlan,
    /// The sections added since (DPDK, guard, watchdog, monitoring budget),
    /// compared through their debug form: none of them changes at run time.
    others: [(&'static str, String); 3],
}

impl Fixed {
    fn of(p: &Plan) -> Fixed {
        Fixed {
            ports: p.ports.clone(),
            links: p.links.clone(),
            bridges: p.bridges.clone(),
            sinks: p.sinks.clone(),
            chains: p.chains.clone(),
            dataplane: (
                p.workers.clone(),
                p.worker.flow_cache,
                p.worker.burst,
                p.worker.malformed,
                p.copy_buffers,
                p.sink_queue,
            ),
            // The socket and the rate-line interval may come from the command line
            // (`run --socket`, `--stats-interval`), which the file does not know:
            // a change in the file takes effect at the next start.
            control: ControlPlan { socket: Default::default(), ..p.control.clone() },
            others: [
                ("dpdk", format!("{:?}", p.dpdk)),
                ("guard", format!("{:?}", p.guard)),
                ("dataplane", format!("{:?} {:?} {:?}", p.watchdog, p.worker.monitor_budget, p.worker.overload_bursts)),
            ],
        }
    }

    /// The first section that differs from `other`'s.
    fn changed(&self, other: &Fixed) -> Option<&'static str> {
        if self.ports != other.ports {
            Some("ports")
        } else if self.links != other.links {
            Some("links")
        } else if self.bridges != other.bridges {
            Some("bridges")
        } else if self.sinks != other.sinks {
            Some("sinks")
        } else if self.chains != other.chains {
            Some("chains")
        } else if self.dataplane != other.dataplane {
            Some("dataplane")
        } else if self.control != other.control {
            Some("control")
        } else {
            self.others.iter().zip(&other.others).find(|(a, b)| a.1 != b.1).map(|(a, _)| a.0)
        }
    }
}

/// What identifies a version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    size: u64,
    inode: u64,
    device: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), size: m.len(), inode: m.ino(), device: m.dev() })
}

/// Reloads the rules of one running configuration file.
pub struct Reloader {
    path: PathBuf,
    running: Fixed,
    book: Arc<RuleBook>,
    /// The version of the file last read (by any trigger).
    seen: Mutex<Option<Stamp>>,
}

impl Reloader {
    /// A reloader for `path`, which the running `plan` was compiled from.
    pub fn new(path: &Path, plan: &Plan, book: Arc<RuleBook>) -> Reloader {
        Reloader { path: path.to_path_buf(), running: Fixed::of(plan), book, seen: Mutex::new(stamp(path)) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and applies its rules. Errors are located in the file
    /// (`file:line:column: field: message`) or name the section that would
    /// need a restart; either way the running rules stay.
    pub fn reload(&self) -> Result<Applied, ApplyError> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp(&self.path);
        let (cfg, file) = load(&self.path)?;
        let plan = compile(&cfg, &file)?;
        if let Some(section) = self.running.changed(&Fixed::of(&plan)) {
            return Err(ApplyError::RestartRequired(format!(
                "{file}: section `{section}` changed: only rules change at run time, restart flowsteer to apply it (the running rules are kept)"
            )));
        }
        self.book.apply(RuleOp::ReplaceAll(plan.rules.rules().to_vec()))
    }

    /// Reloads and logs the outcome; `why` names the trigger.
    pub fn reload_logged(&self, why: &str) -> Result<Applied, ApplyError> {
        let r = self.reload();
        match &r {
            Ok(a) => log::info!(
                "reload ({why}): generation {}, {} rules ({} new, {} removed, {} changed), all workers in {:?}",
                a.generation,
                a.rules,
                a.added,
                a.removed,
                a.changed,
                a.latency
            ),
            Err(e) => log::error!("reload ({why}) refused: {e}; the running rules are kept"),
        }
        r
    }

    /// Whether the file changed since it was last read.
    fn changed_on_disk(&self) -> bool {
        let now = stamp(&self.path);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_some() && now != *seen {
            *seen = now;
            return true;
        }
        false
    }

    /// Runs until `stop`: reloads when `hup` is raised (SIGHUP) and, with
    /// `watch`, when the file changes.
    pub fn run(&self, hup: &AtomicBool, watch: bool, stop: &AtomicBool) {
        let tick = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            if hup.swap(false, Ordering::Relaxed) {
                let _ = self.reload_logged("SIGHUP");
            }
            waited += tick;
            if watch && waited >= WATCH_INTERVAL {
                waited = Duration::ZERO;
                if self.changed_on_disk() {
                    let _ = self.reload_logged("file changed");
                }
            }
        }
    }
}
