//! Gates that keep threads inside a kernel operation until a test releases
//! them: a filesystem's original vnode operation (slow I/O) or copyout (a
//! user page being faulted in). The way to have a kext hook or sysctl
//! handler "stuck" (in flight) while the test tries to unload the kext.
//! Also a callback run inside one of the kext's `IOSleep` calls (the polls
//! of stop's drains), for a test to act at that moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::api::Sim;
use crate::context::Vop;
use crate::lock;

/// What is held (`K` tells which operation), and how many threads wait.
struct GateState<K> {
    held: Option<K>,
    waiting: usize,
}

/// One gate: the operations it covers call `enter` first.
struct Gate<K: 'static> {
    state: Mutex<GateState<K>>,
    cv: Condvar,
    /// Whether anything is held: set before `state.held` and cleared after,
    /// so the operations skip the mutex while nothing is held.
    any_held: AtomicBool,
}

impl<K: Copy + PartialEq> Gate<K> {
    const fn new() -> Gate<K> {
        Gate {
            state: Mutex::new(GateState {
                held: None,
                waiting: 0,
            }),
            cv: Condvar::new(),
            any_held: AtomicBool::new(false),
        }
    }

    /// Blocks while a test holds `key`; whether it blocked. Inlined: every
    /// dispatch and original passes here, and nearly always nothing is held.
    #[inline]
    fn enter(&self, key: K) -> bool {
        if !self.any_held.load(Ordering::Acquire) {
            return false;
        }
        self.wait_while_held(key)
    }

    /// `enter` when some key is held.
    #[cold]
    fn wait_while_held(&self, key: K) -> bool {
        let mut g = lock(&self.state);
        if g.held != Some(key) {
            return false;
        }
        g.waiting += 1;
        self.cv.notify_all();
        while g.held == Some(key) {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.waiting -= 1;
        self.cv.notify_all();
        true
    }

    fn hold(&'static self, key: K) -> Hold<K> {
        let mut g = lock(&self.state);
        self.any_held.store(true, Ordering::Release);
        g.held = Some(key);
        drop(g);
        Hold { gate: self }
    }
}

static VNOPS: Gate<Vop> = Gate::new();
static DISPATCH: Gate<Vop> = Gate::new();
static COPYOUT: Gate<()> = Gate::new();
static MAC_REGISTER: Gate<()> = Gate::new();

/// A thread that blocked runs again on another CPU (`Kernel::migrate`): a
/// hook around the operation enters on one CPU and leaves on another.
fn resumed() {
    crate::kernel::with_current("thread_block", |k| k.migrate());
}

/// Called at the start of every simulated original vnode operation: blocks
/// while a test holds `op`.
#[inline]
pub(crate) fn enter(op: Vop) {
    if VNOPS.enter(op) {
        resumed();
    }
}

/// Called by the VNOP dispatch between reading the vector entry and calling
/// it: blocks while a test holds `op`.
#[inline]
pub(crate) fn enter_dispatch(op: Vop) {
    if DISPATCH.enter(op) {
        resumed();
    }
}

/// A test's callback for a coming `IOSleep` call: how many calls to let
/// pass first, and what to run.
type SleepCallback = (u32, Box<dyn FnOnce() + Send>);
static ON_SLEEP: Mutex<Option<SleepCallback>> = Mutex::new(None);

impl Sim {
    /// Runs `f` on the kext's thread inside its `IOSleep` call after
    /// `skip` others (before it sleeps): a moment inside a wait the kext
    /// polls, such as stop's drains of in-flight hooks, for a test to act
    /// in. The shim has one kext's state per process, so one callback.
    pub fn on_kext_sleep(&self, skip: u32, f: impl FnOnce() + Send + 'static) {
        *lock(&ON_SLEEP) = Some((skip, Box::new(f)));
    }
}

/// Called by `IOSleep` before it sleeps: runs the test's callback when due.
pub(crate) fn enter_sleep() {
    let due = {
        let mut slot = lock(&ON_SLEEP);
        match slot.as_mut() {
            Some((0, _)) => slot.take().map(|(_, f)| f),
            Some((skip, _)) => {
                *skip -= 1;
                None
            }
            None => None,
        }
    };
    if let Some(f) = due {
        f();
    }
}

/// Called by copyout before it copies: blocks while a test holds copyout.
pub(crate) fn enter_copyout() {
    if COPYOUT.enter(()) {
        resumed();
    }
}

/// Called by `mac_policy_register` before it registers: blocks while a test
/// holds it.
pub(crate) fn enter_mac_register() {
    if MAC_REGISTER.enter(()) {
        resumed();
    }
}

/// Holds copyout (`Sim::hold_copyout`).
pub(crate) fn hold_copyout() -> CopyoutHold {
    COPYOUT.hold(())
}

/// Threads held inside a kernel operation until `release` (or drop).
#[must_use = "dropping the hold releases the threads at once"]
pub struct Hold<K: Copy + PartialEq + 'static> {
    gate: &'static Gate<K>,
}

/// Threads held inside a filesystem's original vnode operation.
pub type VnopHold = Hold<Vop>;
/// Threads held inside copyout.
pub type CopyoutHold = Hold<()>;
/// Threads held inside `mac_policy_register`.
pub type MacRegisterHold = Hold<()>;

impl<K: Copy + PartialEq> Hold<K> {
    /// Waits until `n` threads are held; false on timeout.
    pub fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut g = lock(&self.gate.state);
        while g.waiting < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .gate
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Threads held right now.
    pub fn held(&self) -> usize {
        lock(&self.gate.state).waiting
    }

    /// Lets the held threads (and later ones) through.
    pub fn release(self) {}
}

impl<K: Copy + PartialEq> Drop for Hold<K> {
    fn drop(&mut self) {
        lock(&self.gate.state).held = None;
        self.gate.any_held.store(false, Ordering::Release);
        self.gate.cv.notify_all();
    }
}

impl Sim {
    /// From now on, every thread that reaches the filesystems' original
    /// `op` (VNOP_MMAP, VNOP_PAGEIN, VNOP_MNOMAP) waits there until the
    /// returned hold is released: a kext hook around it stays in flight.
    pub fn hold_vnop(&self, op: Vop) -> VnopHold {
        VNOPS.hold(op)
    }

    /// From now on, every thread dispatching `op` reads its vnode's vector
    /// entry and then waits, before calling it, until the hold is released:
    /// a thread that "loaded `vp->v_op[i]` just before it was restored", the
    /// race XNU's lock-free dispatch (bsd/vfs/kpi_vfs.c VNOP_*) allows.
    pub fn hold_dispatch(&self, op: Vop) -> VnopHold {
        DISPATCH.hold(op)
    }

    /// From now on, a kext start that calls `mac_policy_register` waits in
    /// it until the hold is released: what the start did before that step
    /// (for the resident build, the sweep's hooks) is in place, and the test
    /// can act on it before the start goes on.
    pub fn hold_mac_policy_register(&self) -> MacRegisterHold {
        MAC_REGISTER.hold(())
    }
}
