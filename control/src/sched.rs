//! Real-time scheduling for the guard and the dataplane's heartbeat thread.
//!
//! A heartbeat is only as good as the promptness of the threads that send
//! and read it: on a host where other work keeps every core busy, a
//! normal-priority thread can wait tens of milliseconds for a CPU, and the
//! guard would see a hang that is not there (and bypass for nothing). Like
//! other HA heartbeat daemons (corosync), the heartbeat thread and the guard
//! run `SCHED_FIFO` at a low real-time priority: they sleep almost all the
//! time, so they take microseconds of CPU when they wake, never a core.
//! Needs `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO`); without it they run at
//! normal priority and say so.
#![allow(unsafe_code)]

use std::io;

/// The real-time priority used (1 is the lowest, 99 the highest).
pub const PRIORITY: i32 = 10;

/// Puts the calling thread (and threads it creates later) in `SCHED_FIFO`
/// at [`PRIORITY`].
pub fn realtime() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: PRIORITY };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
