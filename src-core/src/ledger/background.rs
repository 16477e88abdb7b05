//! Background scheduling for the ledger's threads (the writer and the checkpointer).
//!
//! Their work can always wait a moment (the spool holds the rows); a request never should, and
//! on a laptop both share the cores. So they run as `SCHED_BATCH` at nice 19, and, on Linux,
//! ask for the shortest time slice the scheduler grants (0.1 ms).
//!
//! Why the slice: the fair scheduler (EEVDF, Linux 6.6 on) lets a running task go on until it has
//! used its slice before a task that wakes on the same core gets it (1.4 ms by default on the
//! 2-core test machine; `se.slice` in `/proc/<pid>/task/<tid>/sched`). Nice 19 lowers the
//! writer's share of the core but not how long a request handler waking behind it may wait.
//! Since Linux 6.12 a thread can ask for a shorter slice (`sched_runtime`); older kernels accept
//! the call and ignore it. With the short slice the ledger's cost to the p99 latency at 2,000
//! requests/s fell by about half (BENCHMARKS.md, ledger).
//!
//! Not `SCHED_IDLE`: a starved writer would hold SQLite's write lock for seconds inside a
//! transaction and make `airlock keys …` fail with "database is locked" (seen in the tests);
//! nice 19 still gets a share, so a transaction ends in milliseconds even on a loaded machine.
//! An unprivileged thread cannot raise its priority again just for the transaction.

/// The slice asked for, in nanoseconds: the scheduler's minimum.
#[cfg(target_os = "linux")]
const SLICE_NS: u64 = 100_000;

/// Lowers the calling thread to background priority; `what` names it in the log if that fails.
pub(super) fn lower_current_thread(what: &str) {
    #[cfg(target_os = "linux")]
    match linux::set_current(linux::SCHED_BATCH, 19, SLICE_NS) {
        Ok(()) => return,
        Err(e) => {
            tracing::debug!("sched_setattr on the {what} thread: {e}; trying without a slice")
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let lowered = {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        thread_priority::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
        )
    };
    // Elsewhere (macOS) there is no batch policy: the lowest priority of the default one.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let lowered =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    if let Err(e) = lowered {
        tracing::debug!("cannot lower the {what} thread's priority: {e:?}");
    }
}

#[cfg(target_os = "linux")]
mod linux {
    pub const SCHED_BATCH: u32 = 3;

    /// `struct sched_attr` as of Linux 4.13 (`SCHED_ATTR_SIZE_VER1`, 56 bytes); the kernel
    /// reads as many bytes as `size` says.
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        /// For the fair policies since Linux 6.12: the slice asked for (clamped to 0.1–100 ms).
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }

    /// `sched_setattr(2)` on the calling thread.
    #[allow(unsafe_code)]
    pub fn set_current(policy: u32, nice: i32, slice_ns: u64) -> std::io::Result<()> {
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy,
            nice,
            runtime: slice_ns,
            ..SchedAttr::default()
        };
        // SAFETY: pid 0 is the calling thread; `attr` is a live, initialised `sched_attr` whose
        // `size` field is its own size, so the kernel reads no byte outside it; flags 0.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0 as libc::pid_t,
                &attr as *const SchedAttr,
                0 as libc::c_uint,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[test]
    fn sched_attr_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }
}
