//! What runs beside the dataplane in `flowsteer run`: the control API and
//! the reload watcher (SIGHUP, file changes).

use crate::api::routes::Ctx;
use crate::api::Server;
use crate::compile::Plan;
use crate::reload::Reloader;
use crate::runtime::{RuntimeError, Shared};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The control API and the reload watcher of a running dataplane. Dropping
/// it stops both and removes the socket.
pub struct Live {
    // Declared first: dropped (socket removed) before the watcher is stopped.
    _server: Server,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts the API on `plan.control.socket` (and the metrics listener) and
    /// the watcher of `config`, which reloads on `hup` (raised by SIGHUP) and,
    /// with `control.watch`, when the file changes.
    pub fn start(plan: &Plan, config: &Path, shared: &Shared, hup: Arc<AtomicBool>) -> Result<Live, RuntimeError> {
        let reloader = Arc::new(Reloader::new(config, plan, Arc::clone(&shared.book)));
        let ctx = Arc::new(Ctx::new(shared.clone(), Some(Arc::clone(&reloader))));
        let server = Server::start(ctx, &plan.control.socket, plan.control.metrics_listen)
            .map_err(|e| RuntimeError::Control(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (s, watch) = (Arc::clone(&stop), plan.control.watch);
        let watcher = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || reloader.run(&hup, watch, &s))
            .map_err(|e| RuntimeError::Control(format!("cannot start the reload watcher: {e}")))?;
        Ok(Live { _server: server, stop, watcher: Some(watcher) })
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}
