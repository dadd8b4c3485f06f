//! A gate that keeps threads inside a filesystem's original vnode operation
//! until a test releases them: the way to have a kext hook "stuck" (in
//! flight) while the test tries to unload the kext.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::api::Sim;
use crate::context::Vop;
use crate::lock;

/// Gate state: which operation is held, and how many threads wait in it.
struct Gate {
    op: Option<Vop>,
    waiting: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    op: None,
    waiting: 0,
});
static CV: Condvar = Condvar::new();
/// Whether any operation is held: set before `GATE.op` and cleared after,
/// so the originals skip the gate's mutex while nothing is held.
static ANY_HELD: AtomicBool = AtomicBool::new(false);

/// Called at the start of every simulated original operation: blocks while
/// a test holds `op`.
pub(crate) fn enter(op: Vop) {
    if !ANY_HELD.load(Ordering::Acquire) {
        return;
    }
    let mut g = lock(&GATE);
    if g.op != Some(op) {
        return;
    }
    g.waiting += 1;
    CV.notify_all();
    while g.op == Some(op) {
        g = CV.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.waiting -= 1;
    CV.notify_all();
}

/// Threads held inside an original operation until `release` (or drop).
#[must_use = "dropping the hold releases the threads at once"]
pub struct VnopHold {
    _private: (),
}

impl VnopHold {
    /// Waits until `n` threads are held; false on timeout.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut g = lock(&GATE);
        while g.waiting < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = CV
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Threads held right now.
    pub fn held(&self) -> usize {
        lock(&GATE).waiting
    }

    /// Lets the held threads (and later ones) through.
    pub fn release(self) {}
}

impl Drop for VnopHold {
    fn drop(&mut self) {
        lock(&GATE).op = None;
        ANY_HELD.store(false, Ordering::Release);
        CV.notify_all();
    }
}

impl Sim {
    /// From now on, every thread that reaches the filesystems' original
    /// `op` (VNOP_MMAP, VNOP_PAGEIN, VNOP_MNOMAP) waits there until the
    /// returned hold is released: a kext hook around it stays in flight.
    pub fn hold_vnop(&self, op: Vop) -> VnopHold {
        let mut g = lock(&GATE);
        ANY_HELD.store(true, Ordering::Release);
        g.op = Some(op);
        drop(g);
        VnopHold { _private: () }
    }
}
