//! The `flowsteer` command.

use clap::{Parser, Subcommand};
use control::client::{self, Body, Client, ClientError};
use control::compile::{compile, Plan};
use control::config::{load, ConfigError};
use control::live::Live;
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
        /// Serve the control API on this Unix socket (overrides control.socket).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
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
    /// List, add, delete or replace the rules of a running `flowsteer run`
    /// (through its control socket). Exit 1: cannot reach it; 2: it refused.
    Rules {
        #[command(subcommand)]
        op: RulesOp,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show the counters of a running `flowsteer run`; with --watch a live
    /// table refreshed in place, with rates. Exit 1: cannot reach it.
    Stats {
        /// Refresh in place until interrupted (like top).
        #[arg(short, long)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(short, long, value_name = "S", default_value_t = 1.0)]
        interval: f64,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Make a running `flowsteer run` reload the rules from its file; the
    /// file's error is printed (exit 2) and the running rules kept when it is invalid.
    Reload {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Turn the bypass of a running `flowsteer run` on (forward everything
    /// without classifying or copying) or off.
    Bypass {
        /// `on` or `off`.
        state: OnOff,
        #[command(flatten)]
        socket: SocketArg,
    },
}

/// The control socket the client commands talk to.
#[derive(clap::Args)]
struct SocketArg {
    /// The control socket of the running flowsteer (its control.socket).
    #[arg(long, value_name = "PATH", default_value = control::compile::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum RulesOp {
    /// Print the running rules.
    List {
        /// Print the server's JSON (valid input for `rules replace --all`).
        #[arg(long)]
        json: bool,
    },
    /// Add a rule (JSON or YAML, the schema of a rule in the configuration file).
    Add {
        /// The rule, e.g. '{"name": "dns", "priority": 5, "match": {"proto": "udp", "dst_port": 53}, "chain": "inspect"}'.
        #[arg(required_unless_present = "file")]
        rule: Option<String>,
        /// Read the rule from a file (`.json`, else YAML; `-` for standard input).
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Delete a rule, or every rule with --all.
    Del {
        /// The rule's name.
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Delete every rule.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Replace a rule (NAME, or adds it), or every rule with --all
    /// (the body is then `{"rules": [...]}`, or `rules:` in YAML).
    Replace {
        /// The rule's name (its definition's name must be the same).
        #[arg(required_unless_present = "all")]
        name: Option<String>,
        /// Replace every rule.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// The rule (or rules), as for `add`.
        #[arg(long, value_name = "JSON|YAML", required_unless_present = "file")]
        rule: Option<String>,
        /// Read it from a file (`.json`, else YAML; `-` for standard input).
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
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
        Command::Rules { op, socket } => client_result(rules_command(op, &Client::new(&socket.socket))),
        Command::Stats { watch, interval, json, socket } => {
            let c = Client::new(&socket.socket);
            if watch {
                if !(interval > 0.0 && interval.is_finite()) {
                    eprintln!("flowsteer: --interval must be a positive number of seconds");
                    return ExitCode::from(2);
                }
                let stop = Arc::new(AtomicBool::new(false));
                for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                    let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
                }
                return client_result(
                    client::watch(&c, std::time::Duration::from_secs_f64(interval), &stop).map(|_| String::new()),
                );
            }
            client_result(c.call("GET", "/stats", None).map(|(_, v)| {
                if json {
                    format!("{v:#}\n")
                } else {
                    client::stats_table(&v, None)
                }
            }))
        }
        Command::Reload { socket } => client_result(
            Client::new(&socket.socket)
                .call("POST", "/reload", None)
                .map(|(_, v)| format!("reloaded: {}\n", client::describe_applied(&v))),
        ),
        Command::Bypass { state, socket } => {
            let on = matches!(state, OnOff::On);
            let body = Body {
                bytes: format!("{{\"on\": {on}}}").into_bytes(),
                content_type: "application/json",
                origin: None,
            };
            client_result(Client::new(&socket.socket).call("POST", "/bypass", Some(&body)).map(|(_, v)| {
                format!(
                    "bypass {} (was {})\n",
                    if on { "on" } else { "off" },
                    if v["was"].as_bool() == Some(true) { "on" } else { "off" }
                )
            }))
        }
        Command::Run { config, stats_interval, socket } => {
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
            if let Some(s) = socket {
                plan.control.socket = s;
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
            let hup = Arc::new(AtomicBool::new(false));
            if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup)) {
                eprintln!("flowsteer: cannot install the handler for SIGHUP: {e}");
                return ExitCode::FAILURE;
            }
            let attach = |shared: &runtime::Shared| Live::start(&plan, &config, shared, Arc::clone(&hup));
            match runtime::run_with(&plan, &stop, attach) {
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

/// Runs a `flowsteer rules` command; returns what to print.
fn rules_command(op: RulesOp, c: &Client) -> Result<String, ClientError> {
    let enc = |n: &str| {
        n.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let applied = |r: Result<(u16, serde_json::Value), ClientError>| {
        r.map(|(_, v)| format!("{}\n", client::describe_applied(&v)))
    };
    match op {
        RulesOp::List { json } => {
            c.call("GET", "/rules", None).map(|(_, v)| if json { format!("{v:#}\n") } else { client::rules_table(&v) })
        }
        RulesOp::Add { rule, file } => {
            applied(c.call("POST", "/rules", Some(&Body::from_arg(rule.as_deref(), file.as_deref())?)))
        }
        RulesOp::Del { name: Some(n), .. } => applied(c.call("DELETE", &format!("/rules/{}", enc(&n)), None)),
        RulesOp::Del { name: None, .. } => applied(c.call("DELETE", "/rules", None)),
        RulesOp::Replace { name, rule, file, .. } => {
            let body = Body::from_arg(rule.as_deref(), file.as_deref())?;
            let path = name.map_or_else(|| "/rules".to_string(), |n| format!("/rules/{}", enc(&n)));
            applied(c.call("PUT", &path, Some(&body)))
        }
    }
}

/// Prints a client command's outcome; exit 1 (connection) or 2 (refused) on error.
fn client_result(r: Result<String, ClientError>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowsteer: {e}");
            ExitCode::from(e.exit_code())
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
