//! Per-thread kernel context: which simulated process and thread an OS thread
//! is running as, which CPU it is on, and whether it is inside kext hook code.

use std::cell::Cell;

/// What kind of kernel callout a thread is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Kext code reached through a patched vnode-op vector entry.
    VnopHook(Vop),
    /// The filesystem's original vnode operation (kernel code again).
    Original,
    /// A kext callback (kauth, MAC, sysctl handler, kmod start/stop).
    Callback,
}

/// The vnode operations the simulator dispatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vop {
    /// VNOP_MMAP.
    Mmap,
    /// VNOP_MNOMAP.
    Mnomap,
    /// VNOP_PAGEIN.
    Pagein,
    /// VNOP_MMAP_CHECK.
    MmapCheck,
    /// VNOP_RECLAIM.
    Reclaim,
    /// VNOP_CLOSE.
    Close,
}

impl Vop {
    /// The XNU descriptor name.
    pub fn name(self) -> &'static str {
        match self {
            Vop::Mmap => "vnop_mmap",
            Vop::Mnomap => "vnop_mnomap",
            Vop::Pagein => "vnop_pagein",
            Vop::MmapCheck => "vnop_mmap_check",
            Vop::Reclaim => "vnop_reclaim",
            Vop::Close => "vnop_close",
        }
    }
}

/// Identity of the current OS thread inside the simulated kernel.
#[derive(Clone, Copy, Debug)]
pub struct ThreadIdentity {
    /// Boot generation the identity belongs to.
    pub boot: u64,
    /// Address of the `thread_t` object.
    pub thread_addr: usize,
    /// `thread_tid()`.
    pub tid: u64,
    /// The process the thread runs for.
    pub pid: i32,
    /// The simulated CPU.
    pub cpu: u32,
}

thread_local! {
    static IDENTITY: Cell<Option<ThreadIdentity>> = const { Cell::new(None) };
    /// The innermost frame; the outer ones are saved by the `with_frame`
    /// calls that entered them, on the thread's own stack.
    static TOP_FRAME: Cell<Option<Frame>> = const { Cell::new(None) };
    static SPINS: Cell<u32> = const { Cell::new(0) };
    /// The file operation (open, exec, mmap) whose MAC check or kauth
    /// authorisation the thread is in, if any.
    static FILE_OPERATION: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// The current identity, if this thread has one for `boot`.
pub fn identity(boot: u64) -> Option<ThreadIdentity> {
    IDENTITY.with(|c| c.get()).filter(|i| i.boot == boot)
}

/// Replaces the identity; returns the previous one.
pub fn set_identity(id: Option<ThreadIdentity>) -> Option<ThreadIdentity> {
    IDENTITY.with(|c| c.replace(id))
}

/// Runs `f` inside `frame`.
/// The original vnode op is kernel code: its stack use is not the kext's
/// (`stack::kernel_section`).
pub fn with_frame<R>(frame: Frame, f: impl FnOnce() -> R) -> R {
    let _kernel = (frame == Frame::Original).then(crate::stack::KernelScope::enter);
    // Frames nest as these calls do: the outer one comes back when `f`
    // returns (a Vec-backed stack cost a borrow and a capacity check each
    // way, on every hook and original).
    let outer = TOP_FRAME.replace(Some(frame));
    let r = f();
    TOP_FRAME.set(outer);
    r
}

/// The innermost frame.
pub fn top_frame() -> Option<Frame> {
    TOP_FRAME.get()
}

/// Whether the thread runs kext code inside a VNOP_PAGEIN hook right now.
pub fn in_pagein_hook() -> bool {
    top_frame() == Some(Frame::VnopHook(Vop::Pagein))
}

/// Runs `f` as the part of a file operation that calls a kext's MAC hooks
/// or kauth listeners (`what` names it: "mac_vnode_check_open"). XNU runs
/// them inside open(2), execve(2) and mmap(2) (vn_open_auth,
/// exec_check_permissions, mmap in bsd/vfs/vfs_vnops.c, bsd/kern/
/// kern_exec.c, bsd/kern/kern_mman.c, xnu-11417.121.6), whose callers
/// must not hang on other mounts: see `file_operation`.
pub fn in_file_operation<R>(what: &'static str, f: impl FnOnce() -> R) -> R {
    let outer = FILE_OPERATION.replace(Some(what));
    let r = f();
    FILE_OPERATION.set(outer);
    r
}

/// The file operation whose hooks the thread runs, if any
/// (`in_file_operation`).
pub fn file_operation() -> Option<&'static str> {
    FILE_OPERATION.get()
}

/// Spinlocks the thread holds.
pub fn spins_held() -> u32 {
    SPINS.with(|c| c.get())
}

/// Records one more (or one fewer) spinlock held.
pub fn spin_adjust(delta: i32) {
    SPINS.with(|c| c.set(c.get().saturating_add_signed(delta)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pagein_hook_is_seen_again_after_the_original_it_called_returns() {
        let hook = Frame::VnopHook(Vop::Pagein);
        assert!(!in_pagein_hook());
        let seen = with_frame(hook, || {
            let before = in_pagein_hook();
            let inner = with_frame(Frame::Original, || {
                // A callback nested in the original, as deep as it goes.
                let deepest = with_frame(Frame::Callback, top_frame);
                (in_pagein_hook(), deepest, top_frame())
            });
            (before, inner, in_pagein_hook())
        });
        assert_eq!(
            seen,
            (
                true,
                (false, Some(Frame::Callback), Some(Frame::Original)),
                true
            ),
            "a sleep after the original returns is still in the hook"
        );
        assert_eq!(top_frame(), None);
    }
}
