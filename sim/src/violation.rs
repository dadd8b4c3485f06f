//! What a real kernel would punish: each detector records a `Violation`, and
//! the simulator turns it into a test failure at the next safe point.

use std::fmt;

/// One thing the kext did that would crash, hang or corrupt a real kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A function pointer the kext handed to the kernel was called after the
    /// kext unloaded (`what` names the registration).
    CallAfterUnload {
        /// The registration the pointer came from.
        what: String,
        /// The pointer.
        addr: u64,
    },
    /// Kext allocations still live when its stop routine returned success.
    LeakedAllocations {
        /// Number of blocks.
        count: usize,
        /// Total bytes.
        bytes: usize,
        /// Kinds of the first few blocks.
        what: Vec<&'static str>,
    },
    /// A registration (sysctl, MAC policy, kauth listener, filesystem, lock
    /// object) still present when the kext unloaded.
    LeftRegistered(String),
    /// An iocount or usecount went below zero or was left unbalanced.
    UnbalancedCount(String),
    /// copyout (or a sleeping call) while the thread held a spinlock.
    SpinlockHeld(String),
    /// A blocking or allocating call inside a VNOP_PAGEIN hook.
    SleepInPagein(String),
    /// IOFree of a pointer that is not a live IOMalloc block, or of the
    /// wrong size.
    BadFree(String),
    /// Bad lock usage (unlock by a non-owner, recursion, free while held).
    LockMisuse(String),
    /// The kext called `panic()` or made a call XNU panics on.
    KernelPanic(String),
    /// A boundary contract taken from the XNU source was broken: an argument
    /// precondition of a KPI, the context a call is allowed in, or what XNU
    /// does with a callback's return value. `rule` names the contract row
    /// (`KPI.rule`, e.g. `vnode_create.vreg_needs_mount`).
    Contract {
        /// The contract row's id.
        rule: &'static str,
        /// What the kext did.
        detail: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::CallAfterUnload { what, addr } => {
                write!(f, "call into unloaded kext through {what} ({addr:#x})")
            }
            Violation::LeakedAllocations { count, bytes, what } => {
                write!(
                    f,
                    "kext unloaded with {count} allocation(s) ({bytes} bytes) still live: {what:?}"
                )
            }
            Violation::LeftRegistered(s) => write!(f, "kext unloaded with {s} still registered"),
            Violation::UnbalancedCount(s) => write!(f, "unbalanced vnode count: {s}"),
            Violation::SpinlockHeld(s) => write!(f, "spinlock held across {s}"),
            Violation::SleepInPagein(s) => {
                write!(f, "{s} inside a VNOP_PAGEIN hook (may block or allocate)")
            }
            Violation::BadFree(s) => write!(f, "bad IOFree: {s}"),
            Violation::LockMisuse(s) => write!(f, "lock misuse: {s}"),
            Violation::KernelPanic(s) => write!(f, "kernel panic: {s}"),
            Violation::Contract { rule, detail } => {
                write!(f, "XNU contract {rule} broken: {detail}")
            }
        }
    }
}

/// What the simulator does with a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ViolationPolicy {
    /// Panic (fail the test) at the next safe point: the default.
    #[default]
    Panic,
    /// Only collect; tests read them with `Sim::take_violations`.
    Collect,
}
