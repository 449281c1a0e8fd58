//! Giving memory back after load.
//!
//! glibc's malloc keeps what a burst freed in its heaps: free chunks below
//! the top of a heap stay resident until `malloc_trim` returns their pages.
//! After a 1,000-client burst and every client gone, the daemon held 146 MiB
//! where it held 33 MiB with the same clients before the burst (issue 16,
//! BENCHMARKS.md "Session 4"; fewer arenas, `MALLOC_ARENA_MAX=2`, did not
//! help). Nothing of warden's own kept it: the relay queues, socket buffers
//! and packets are freed when the clients leave.
//!
//! [`trim_after_load`] watches the hub's counters and, once they stop moving
//! after having moved (a burst ended, clients left), asks malloc to return
//! its free pages (`malloc_trim`), once per quiet spell. Under steady traffic
//! it does nothing: freed memory is reused there, and trimming would only
//! cost page faults. On a libc without `malloc_trim` it does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::daemon::hub::ServiceStats;

/// How often the counters are compared (a few atomic loads): a trim follows
/// the end of a burst within two of these.
pub const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What moves while the hub works.
fn activity(stats: &ServiceStats) -> Activity {
    let s = stats.snapshot();
    (s.clients_connected, s.events_processed, s.events_relayed)
}

type Activity = (u64, u64, u64);

/// Decides when to trim: at the first look that finds the counters where the
/// previous look left them, after they had moved. Once per quiet spell.
#[derive(Debug)]
struct QuietAfterActivity {
    last: Activity,
    moved: bool,
}

impl QuietAfterActivity {
    fn new(now: Activity) -> Self {
        QuietAfterActivity {
            last: now,
            moved: false,
        }
    }

    /// True when a trim is due now.
    fn look(&mut self, now: Activity) -> bool {
        if now != self.last {
            self.last = now;
            self.moved = true;
            false
        } else {
            std::mem::take(&mut self.moved)
        }
    }
}

/// Trims malloc's free memory once after each spell of activity, checking
/// every `every`, until `stop`.
pub async fn trim_after_load(stats: Arc<ServiceStats>, every: Duration, stop: CancellationToken) {
    let mut quiet = QuietAfterActivity::new(activity(&stats));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if quiet.look(activity(&stats)) {
            // A few ms over a large heap: off the async workers.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Returns malloc's free pages to the system; true if any were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and only walks malloc's own
        // arenas under their locks; it is safe to call from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_once_when_the_counters_stop_after_moving() {
        let mut quiet = QuietAfterActivity::new((0, 0, 0));
        assert!(!quiet.look((0, 0, 0)), "nothing happened yet");
        assert!(!quiet.look((1000, 0, 0)), "clients connected: busy");
        assert!(!quiet.look((1000, 200, 200)), "a burst: busy");
        assert!(!quiet.look((0, 200, 200)), "the clients left: busy");
        assert!(quiet.look((0, 200, 200)), "quiet after activity: trim");
        assert!(!quiet.look((0, 200, 200)), "once per quiet spell");
        assert!(!quiet.look((0, 201, 201)));
        assert!(quiet.look((0, 201, 201)));
    }
}
