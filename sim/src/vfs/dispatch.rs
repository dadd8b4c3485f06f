//! Dispatch: `(*vp->v_op[desc.vdesc_offset])(&args)` with the checks a
//! kext's hook gets.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;

use super::{Vfs, Vnode, errno, word};
use crate::arena::Owner;
use crate::context::{Frame, Vop};
use crate::kernel::Kernel;
use crate::violation::Violation;

impl Vfs {
    /// `(*vp->v_op[desc.vdesc_offset])(args)`, with the entry read atomically
    /// because a kext patches vectors concurrently.
    pub fn dispatch(&self, k: &Kernel, vp: &Vnode, op: Vop, args: *mut c_void) -> c_int {
        let vector = self.v_op(vp);
        if vector == 0 {
            k.violation(Violation::KernelPanic(format!(
                "{}: vnode {:#x} has no v_op",
                op.name(),
                vp.addr
            )));
            return errno::EIO;
        }
        let off = self.offsets.of(op);
        let entry = word(vector + off * 8).load(Ordering::Acquire);
        crate::hold::enter_dispatch(op);
        let info = self.vector_info(vector);
        let original = info.as_ref().and_then(|i| i.originals.get(off).copied());
        if let Some(i) = info.as_ref().filter(|i| i.freed) {
            k.violation(Violation::CallAfterUnload {
                what: format!(
                    "{} through a vector freed by vfs_fsremove ({})",
                    op.name(),
                    i.fs
                ),
                addr: entry as u64,
            });
            return errno::EIO;
        }
        if crate::foreign::is_trampoline(entry) {
            // Another loaded kext's hook: it forwards on its own.
            return call_vnop(entry, args);
        }
        let kernel_vector = info.as_ref().is_some_and(|i| i.owner == Owner::Kernel);
        let kext_code = !kernel_vector || original != Some(entry);
        if kext_code && !k.kext.is_loaded() {
            let what = match &info {
                Some(i) => format!("{} entry of the {} vnode-op vector", op.name(), i.fs),
                None => format!("{} entry of an unknown vector {vector:#x}", op.name()),
            };
            k.violation(Violation::CallAfterUnload {
                what,
                addr: entry as u64,
            });
            // The kext's code is gone: run the filesystem's own operation.
            return match (kernel_vector, original) {
                (true, Some(orig)) => call_vnop(orig, args),
                _ => errno::EIO,
            };
        }
        if entry == 0 {
            k.violation(Violation::KernelPanic(format!(
                "{}: NULL vector entry",
                op.name()
            )));
            return errno::EIO;
        }
        if kext_code {
            hook_call(k, vp, op, || call_vnop(entry, args))
        } else {
            call_vnop(entry, args)
        }
    }
}

thread_local! {
    /// The kext's vnode-op hooks on this thread's stack.
    static HOOKS_ON_STACK: Cell<u32> = const { Cell::new(0) };
}

/// Runs a kext's vnode-op hook. One entered while another of its hooks is
/// on the same thread's stack (a stacking filesystem's op forwarding to the
/// lower vnode's vector: nullfs_mmap's VNOP_MMAP(lvp),
/// bsd/miscfs/nullfs/null_vnops.c:919, xnu-11417.121.6) is
/// `stack.nested_hooks`: `kext-shim/stack.tsv` budgets each hook alone
/// (1 KiB of a 16 KiB kernel stack, osfmk/mach/i386/vm_param.h
/// KERNEL_STACK_SIZE, xnu-11417.121.6), so a nested one doubles the kext's
/// share of a stack already deep in the VM and VFS.
fn hook_call(k: &Kernel, vp: &Vnode, op: Vop, call: impl FnOnce() -> c_int) -> c_int {
    let outer = HOOKS_ON_STACK.get();
    if outer > 0 {
        k.violation(Violation::Contract {
            rule: "stack.nested_hooks",
            detail: format!(
                "{} hook entered for {} inside {outer} other hook(s) of the kext on the \
                 same stack",
                op.name(),
                vp.path
            ),
        });
    }
    HOOKS_ON_STACK.set(outer + 1);
    let r = k.kext_call(Frame::VnopHook(op), call);
    HOOKS_ON_STACK.set(outer);
    r
}

/// Calls a vector entry (for the simulated second hooker).
pub(crate) fn call_entry(entry: usize, args: *mut c_void) -> c_int {
    call_vnop(entry, args)
}

/// Calls a vector entry.
fn call_vnop(entry: usize, args: *mut c_void) -> c_int {
    // SAFETY: `entry` is a non-null vnode-op vector entry: a function with
    // the `int (*)(void *)` signature, kernel's or a loaded kext's.
    let f: unsafe extern "C" fn(*mut c_void) -> c_int = unsafe { std::mem::transmute(entry) };
    // SAFETY: `args` points at the argument block matching the operation.
    unsafe { f(args) }
}
