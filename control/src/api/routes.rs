//! The control API's endpoints (documented in `docs/API.md`).

use super::http::{Request, Response};
use super::metrics;
use super::rule_json::{located, parse_body, Index, RulesBody};
use crate::config::RuleCfg;
use crate::reload::Reloader;
use crate::rules::{Applied, ApplyError, RuleOp};
use crate::runtime::Shared;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A worker that has not polled for this long is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// When each worker was last seen making progress (its poll counters moving).
#[derive(Default)]
pub struct Progress {
    seen: Mutex<Vec<(u64, Instant)>>,
}

impl Progress {
    /// Notes the workers' poll counters now; returns, per worker, the time since they last moved.
    pub fn update(&self, sh: &Shared) -> Vec<Duration> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.resize(sh.workers.len(), (u64::MAX, now));
        sh.workers
            .iter()
            .zip(seen.iter_mut())
            .map(|(w, (polls, at))| {
                let p = w.busy_polls.get() + w.idle_polls.get();
                if p != *polls {
                    *polls = p;
                    *at = now;
                }
                now - *at
            })
            .collect()
    }
}

/// What the endpoints work on.
pub struct Ctx {
    /// The running dataplane's shared state.
    pub shared: Shared,
    /// Reloads the configuration file (absent when there is none to reload).
    pub reloader: Option<Arc<Reloader>>,
    /// Port and chain names, for rule bodies.
    pub index: Index,
    /// Worker progress, for `/health`.
    pub progress: Progress,
    /// When the dataplane started.
    pub started: Instant,
}

impl Ctx {
    /// The context of a running dataplane.
    pub fn new(shared: Shared, reloader: Option<Arc<Reloader>>) -> Ctx {
        let index = Index::new(shared.names.ports.clone(), shared.chain_names.clone());
        Ctx { shared, reloader, index, progress: Progress::default(), started: Instant::now() }
    }
}

/// `POST /bypass`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BypassBody {
    on: bool,
}

/// Answers one request.
pub fn route(ctx: &Ctx, req: &Request) -> Response {
    let m = req.method.as_str();
    let path = req.path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    match path {
        "/rules" => match m {
            "GET" => list_rules(ctx),
            "POST" => match parse_body::<RuleCfg>(req) {
                Ok(cfg) => match ctx.index.compile(&cfg, "") {
                    Ok(rule) => applied(ctx.shared.book.apply(RuleOp::Add(rule)), 201),
                    Err(e) => located(&e),
                },
                Err(r) => r,
            },
            "PUT" => match parse_body::<RulesBody>(req) {
                Ok(body) => {
                    let mut rules = Vec::with_capacity(body.rules.len());
                    for (i, r) in body.rules.iter().enumerate() {
                        match ctx.index.compile(r, &format!("rules[{i}]")) {
                            Ok(rule) => rules.push(rule),
                            Err(e) => return located(&e),
                        }
                    }
                    applied(ctx.shared.book.apply(RuleOp::ReplaceAll(rules)), 200)
                }
                Err(r) => r,
            },
            "DELETE" => applied(ctx.shared.book.apply(RuleOp::ReplaceAll(Vec::new())), 200),
            _ => Response::method_not_allowed(m, path, "GET, POST, PUT, DELETE"),
        },
        p if p.starts_with("/rules/") => {
            let name = &p["/rules/".len()..];
            match m {
                "GET" => {
                    let set = ctx.shared.table.load();
                    match set.rules.rule_id(name) {
                        Some(id) => Response::json(200, &ctx.index.render(&set.rules.rules()[id as usize])),
                        None => Response::error(404, format!("there is no rule `{name}`")),
                    }
                }
                "PUT" => match parse_body::<RuleCfg>(req) {
                    Ok(cfg) if cfg.name.value != name => Response::json(
                        400,
                        &json!({
                            "error": format!("the body's name `{}` is not the path's `{name}`; rename by deleting and adding", cfg.name.value),
                            "field": "name",
                        }),
                    ),
                    Ok(cfg) => match ctx.index.compile(&cfg, "") {
                        Ok(rule) => {
                            let exists = ctx.shared.table.load().rules.rule_id(name).is_some();
                            applied(ctx.shared.book.apply(RuleOp::Put(rule)), if exists { 200 } else { 201 })
                        }
                        Err(e) => located(&e),
                    },
                    Err(r) => r,
                },
                "DELETE" => applied(ctx.shared.book.apply(RuleOp::Delete(name.to_string())), 200),
                _ => Response::method_not_allowed(m, path, "GET, PUT, DELETE"),
            }
        }
        "/stats" => match m {
            "GET" => Response::json(200, &stats(ctx)),
            _ => Response::method_not_allowed(m, path, "GET"),
        },
        "/health" => match m {
            "GET" => health(ctx),
            _ => Response::method_not_allowed(m, path, "GET"),
        },
        "/bypass" => match m {
            "GET" => Response::json(200, &json!({ "on": ctx.shared.bypass.is_on(), "engaged": ctx.shared.bypass.engaged() })),
            "POST" => match parse_body::<BypassBody>(req) {
                Ok(b) => {
                    let was = ctx.shared.bypass.set(b.on);
                    if was != b.on {
                        log::warn!("bypass turned {} through the control API", if b.on { "on" } else { "off" });
                    }
                    Response::json(200, &json!({ "on": b.on, "was": was, "engaged": ctx.shared.bypass.engaged() }))
                }
                Err(r) => r,
            },
            _ => Response::method_not_allowed(m, path, "GET, POST"),
        },
        "/reload" => match m {
            "POST" => match &ctx.reloader {
                Some(r) => applied(r.reload_logged("control API"), 200),
                None => Response::error(409, "this dataplane was not started from a file"),
            },
            _ => Response::method_not_allowed(m, path, "POST"),
        },
        "/metrics" => match m {
            "GET" => metrics_response(ctx),
            _ => Response::method_not_allowed(m, path, "GET"),
        },
        _ => Response::error(
            404,
            format!("no endpoint {path}: see docs/API.md (/rules, /rules/NAME, /stats, /health, /bypass, /reload, /metrics)"),
        ),
    }
}

/// `GET /metrics`, also served alone by the TCP listener.
pub fn metrics_response(ctx: &Ctx) -> Response {
    let stalled = ctx.progress.update(&ctx.shared);
    Response::text(200, metrics::CONTENT_TYPE, metrics::render(&ctx.shared, &stalled))
}

fn list_rules(ctx: &Ctx) -> Response {
    let set = ctx.shared.table.load();
    let rules: Vec<Value> = set.rules.rules().iter().map(|r| ctx.index.render(r)).collect();
    Response::json(200, &json!({ "generation": set.generation, "rules": rules }))
}

/// The response to a rule change: 200/201 (or 202 when a worker had not
/// taken the new set when the wait ran out), or the error.
fn applied(r: Result<Applied, ApplyError>, ok: u16) -> Response {
    match r {
        Ok(a) => {
            let status = if a.pending.is_empty() { ok } else { 202 };
            Response::json(
                status,
                &json!({
                    "generation": a.generation,
                    "rules": a.rules,
                    "added": a.added,
                    "removed": a.removed,
                    "changed": a.changed,
                    "latency_us": a.latency.as_micros() as u64,
                    "propagation_us": a.propagation.as_micros() as u64,
                    "workers_pending": a.pending,
                }),
            )
        }
        Err(ApplyError::Config(e)) => located(&e),
        Err(e) => {
            let status = match &e {
                ApplyError::Exists(_) | ApplyError::RestartRequired(_) => 409,
                ApplyError::NotFound(_) => 404,
                ApplyError::SlotsExhausted { .. } => 503,
                ApplyError::Invalid(_) | ApplyError::TooMany { .. } | ApplyError::Config(_) => 400,
            };
            Response::error(status, e.to_string())
        }
    }
}

fn stats(ctx: &Ctx) -> Value {
    let sh = &ctx.shared;
    let s = sh.snapshot();
    let links = |l: u64| match l {
        1 => "up",
        2 => "down",
        _ => "n/a",
    };
    let ports: Vec<Value> = s
        .ports
        .iter()
        .zip(s.port_links.iter().chain(std::iter::repeat(&0)))
        .map(|((name, p), &l)| {
            json!({
                "name": name, "link": links(l),
                "rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes, "rx_dropped": p.rx_dropped,
                "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes, "tx_dropped": p.tx_dropped,
            })
        })
        .collect();
    let workers: Vec<Value> = sh
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({
                "id": i, "generation": w.generation.get(),
                "rx": w.rx.get(), "tx": w.tx.get(), "matched": w.matched.get(), "unmatched": w.unmatched.get(),
                "bypassed": w.bypassed.get(), "dropped": w.dropped(), "malformed": w.malformed_total(),
                "cache_hits": w.cache_hits.get(), "cache_misses": w.cache_misses.get(),
                "busy_polls": w.busy_polls.get(), "idle_polls": w.idle_polls.get(),
            })
        })
        .collect();
    let rules: Vec<Value> = s.rules.iter().map(|(n, p, b)| json!({ "name": n, "packets": p, "bytes": b })).collect();
    let chains: Vec<Value> = s
        .chains
        .iter()
        .map(|c| {
            let stages: Vec<Value> = c
                .stages
                .iter()
                .map(|st| {
                    json!({ "kind": st.kind, "in": st.input, "out": st.output, "shed": st.shed, "dropped": st.dropped, "errors": st.errors })
                })
                .collect();
            json!({ "name": c.name, "packets": c.packets, "closed_drops": c.closed_drops, "stages": stages })
        })
        .collect();
    let sinks: Vec<Value> = s
        .sinks
        .iter()
        .zip(&sh.sinks)
        .map(|(k, q)| {
            json!({ "name": k.name, "up": q.is_up(), "written": k.written, "errors": k.errors, "lost_down": k.lost_down, "queued": k.queued })
        })
        .collect();
    let pairs = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>();
    json!({
        "generation": sh.table.generation(),
        "bypass": sh.bypass.is_on(),
        "uptime_seconds": ctx.started.elapsed().as_secs_f64(),
        "totals": {
            "rx": s.rx, "tx": s.tx, "matched": s.matched, "unmatched": s.unmatched, "bypassed": s.bypassed,
            "dropped": s.dropped(), "drops": pairs(&s.drops), "malformed": pairs(&s.malformed),
            "copies_lost": s.copies_lost(), "copy_pool_empty": s.copy_pool_empty,
            "cache_hits": s.cache_hits, "cache_misses": s.cache_misses,
        },
        "ports": ports,
        "workers": workers,
        "rules": rules,
        "chains": chains,
        "sinks": sinks,
    })
}

fn health(ctx: &Ctx) -> Response {
    let sh = &ctx.shared;
    let since = ctx.progress.update(sh);
    let generation = sh.table.generation();
    let mut problems = Vec::new();
    let workers: Vec<Value> = sh
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let idle = since.get(i).copied().unwrap_or_default();
            let stalled = idle >= STALL_AFTER;
            if stalled {
                problems.push(format!("worker {i} has not polled for {:.1} s", idle.as_secs_f64()));
            }
            let g = w.generation.get();
            let watch = sh.watchdog.as_ref().and_then(|d| d.workers.get(i));
            let bypassed = watch.is_some_and(|x| x.bypassing.load(std::sync::atomic::Ordering::Relaxed));
            if bypassed {
                problems.push(format!("worker {i} stalled: its ports are with the watchdog's bypass forwarder"));
            }
            json!({
                "id": i,
                "generation": g,
                "current": g == generation,
                "last_progress_ms": idle.as_millis() as u64,
                "stalled": stalled,
                "watchdog_bypass": bypassed,
                "watchdog_engaged": watch.map_or(0, |x| x.engagements.load(std::sync::atomic::Ordering::Relaxed)),
            })
        })
        .collect();
    let sinks: Vec<Value> = sh
        .sinks
        .iter()
        .map(|q| {
            if !q.is_up() {
                problems.push(format!("sink {} is down", q.name()));
            }
            json!({ "name": q.name(), "up": q.is_up() })
        })
        .collect();
    if sh.bypass.is_on() {
        problems.push("bypass is on: nothing is classified or copied".into());
    }
    let ok = problems.is_empty();
    Response::json(
        if ok { 200 } else { 503 },
        &json!({
            "status": if ok { "ok" } else { "degraded" },
            "problems": problems,
            "generation": generation,
            "bypass": sh.bypass.is_on(),
            "workers": workers,
            "sinks": sinks,
        }),
    )
}
