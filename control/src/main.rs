//! The `flowsteer` command.

use clap::{Parser, Subcommand};
use control::compile::{compile, Plan};
use control::config::{load, ConfigError};
use control::runtime::{self, ReplayArgs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// flowsteer: a poll-mode dataplane that steers selected VM-to-VM flows
/// through capture-and-copy chains and forwards every original untouched.
#[derive(Parser)]
#[command(
    name = "flowsteer",
    version,
    about = "A poll-mode dataplane that steers selected VM-to-VM flows through capture-and-copy chains and forwards every original untouched",
    long_about = None
)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dataplane until SIGINT or SIGTERM, then drain, flush the sinks
    /// and print the final counters.
    Run {
        /// Configuration file (YAML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Seconds between rate summaries (overrides dataplane.stats_interval; 0 = off).
        #[arg(long, value_name = "SECS")]
        stats_interval: Option<f64>,
    },
    /// Validate a configuration: exit 0 when it is good, 2 with one located
    /// error (file:line:column: field: message) when it is not.
    Check {
        /// Configuration file (YAML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Watch the dataplane (heartbeats on the `guard.heartbeat` socket) and,
    /// while it is dead or hung, forward between its Linux interfaces in the
    /// kernel (tc redirect for links, a Linux bridge for bridges); hand back
    /// when it returns. Runs until SIGINT or SIGTERM.
    Guard {
        /// Configuration file (YAML), the dataplane's own; needs a `guard:` section.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Remove a bypass left in place (and the guard's bridges) and exit.
        #[arg(long)]
        remove: bool,
    },
    /// Push a capture through the rules and chains offline (a dry run before
    /// installing rules) and print per-rule counts.
    Replay {
        /// Configuration file (YAML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Capture to replay (pcap or pcapng, Ethernet).
        #[arg(short, long, value_name = "IN.pcap[ng]")]
        input: PathBuf,
        /// Write every copy to this pcapng file instead of the configured sinks.
        #[arg(short, long, value_name = "OUT.pcapng")]
        output: Option<PathBuf>,
        /// Write the forwarded originals (what leaves the input port's link peer) to this file.
        #[arg(short, long, value_name = "FWD.pcap[ng]")]
        forwarded: Option<PathBuf>,
        /// The port the capture enters by (default: the first linked port).
        #[arg(long, value_name = "PORT")]
        in_port: Option<String>,
    },
}

fn load_plan(path: &Path) -> Result<Plan, ConfigError> {
    let (cfg, file) = load(path)?;
    compile(&cfg, &file)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).format_timestamp_millis().init();

    match cli.command {
        Command::Check { config } => match load_plan(&config) {
            Ok(plan) => {
                println!(
                    "{}: ok ({} ports, {} links, {} sinks, {} chains, {} rules, {} workers)",
                    config.display(),
                    plan.ports.len(),
                    plan.links.pairs().len(),
                    plan.sinks.len(),
                    plan.chains.len(),
                    plan.rules.len(),
                    plan.workers.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => config_failed(&e),
        },
        Command::Run { config, stats_interval } => {
            let mut plan = match load_plan(&config) {
                Ok(p) => p,
                Err(e) => return config_failed(&e),
            };
            if let Some(s) = stats_interval {
                if !(s >= 0.0 && s.is_finite()) {
                    eprintln!("flowsteer: --stats-interval must be 0 (off) or a number of seconds");
                    return ExitCode::from(2);
                }
                plan.stats_interval = (s > 0.0).then(|| std::time::Duration::from_secs_f64(s));
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                // A second signal while draining exits at once (status 1), as a stuck sink
                // must never make the process unkillable short of SIGKILL.
                let second = signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop));
                if let Err(e) = second.and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop))) {
                    eprintln!("flowsteer: cannot install the handler for signal {sig}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match runtime::run(&plan, &stop) {
                Ok(snap) => {
                    print!("{}", snap.report());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flowsteer: {}: {e}", config.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Guard { config, remove } => match load_plan(&config) {
            Ok(plan) => guard(&config, &plan, remove),
            Err(e) => config_failed(&e),
        },
        Command::Replay { config, input, output, forwarded, in_port } => {
            let mut plan = match load_plan(&config) {
                Ok(p) => p,
                Err(e) => return config_failed(&e),
            };
            let args = ReplayArgs { input, in_port, output, forwarded };
            match runtime::replay(&mut plan, &args) {
                Ok(snap) => {
                    print!("{}", snap.report());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flowsteer: replay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `flowsteer guard`: runs until SIGINT/SIGTERM, then prints its counters.
fn guard(config: &Path, plan: &Plan, remove: bool) -> ExitCode {
    if plan.guard.is_none() {
        eprintln!("flowsteer: {}: no `guard:` section: nothing to guard", config.display());
        return ExitCode::from(2);
    }
    if remove {
        return match control::guard::remove_leftovers(plan) {
            Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
            Ok(failed) => {
                for f in failed {
                    eprintln!("flowsteer: guard --remove: {f}");
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("flowsteer: guard --remove: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mut signals =
        match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("flowsteer: cannot install the signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = tx.send(());
        }
    });
    match control::guard::run(plan, rx) {
        Ok(counters) => {
            print!("{}", counters.report());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowsteer: guard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_failed(e: &ConfigError) -> ExitCode {
    eprintln!("flowsteer: {e}");
    ExitCode::from(2)
}
