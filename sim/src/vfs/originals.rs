//! The filesystems' own vnode operations (and deadfs's).

use std::ffi::{c_int, c_void};

use super::desc::{VopOffsets, vn_default_error};
use super::{Vnode, errno};
use crate::context::{self, Frame, Vop};
use crate::kernel::{Kernel, TraceEvent, TraceOp};
use crate::lock;
use crate::xnu;

/// Reads the vnode argument every vnop argument block has at offset 8.
fn arg_vnode(args: *mut c_void) -> usize {
    let vp = (args as *const usize).wrapping_add(1);
    // SAFETY: every vnop argument block starts with a_desc then a_vp.
    unsafe { *vp }
}

fn trace_vnop(k: &Kernel, vp: &Vnode, op: TraceOp, offset: i64, size: u64, prot: i32) {
    if k.config.trace_capacity == 0 {
        // Nothing is kept: skip the path copy and the trace lock.
        return;
    }
    let id = k.identity();
    k.trace(TraceEvent {
        seq: 0,
        op,
        pid: id.pid,
        tid: id.tid,
        vnode: vp.addr as u64,
        vid: vp.vid,
        path: vp.path.clone(),
        offset,
        size,
        prot,
        maxprot: 0,
    });
}

/// The simulated filesystems' VNOP_MMAP: records it; never fails.
extern "C" fn sim_vnop_mmap(args: *mut c_void) -> c_int {
    // The filesystem's own op: its stack is the kernel's, not the hook's.
    let _kernel = crate::stack::KernelScope::enter();
    crate::hold::enter(Vop::Mmap);
    context::with_frame(Frame::Original, || {
        let k = crate::kernel::current_or_abort("VNOP_MMAP");
        let a = args as *const xnu::vnop_mmap_args;
        // SAFETY: dispatched with a vnop_mmap_args block.
        let fflags = unsafe { (*a).a_fflags };
        if let Some(vp) = k.vfs.vnode(arg_vnode(args)) {
            trace_vnop(&k, &vp, TraceOp::Mmap, 0, 0, fflags);
        }
        0
    })
}

/// VNOP_MNOMAP: records it.
extern "C" fn sim_vnop_mnomap(args: *mut c_void) -> c_int {
    // The filesystem's own op: its stack is the kernel's, not the hook's.
    let _kernel = crate::stack::KernelScope::enter();
    crate::hold::enter(Vop::Mnomap);
    context::with_frame(Frame::Original, || {
        let k = crate::kernel::current_or_abort("VNOP_MNOMAP");
        if let Some(vp) = k.vfs.vnode(arg_vnode(args)) {
            trace_vnop(&k, &vp, TraceOp::Mnomap, 0, 0, 0);
        }
        0
    })
}

/// VNOP_CLOSE: records it; never fails.
extern "C" fn sim_vnop_close(args: *mut c_void) -> c_int {
    // The filesystem's own op: its stack is the kernel's, not the hook's.
    let _kernel = crate::stack::KernelScope::enter();
    context::with_frame(Frame::Original, || {
        let k = crate::kernel::current_or_abort("VNOP_CLOSE");
        // SAFETY: dispatched with a vnop_close_args block.
        let fflag = unsafe { (*(args as *const xnu::vnop_close_args)).a_fflag };
        if let Some(vp) = k.vfs.vnode(arg_vnode(args)) {
            trace_vnop(&k, &vp, TraceOp::Close, 0, 0, fflag);
        }
        0
    })
}

/// VNOP_MMAP_CHECK: allows everything.
extern "C" fn sim_vnop_mmap_check(args: *mut c_void) -> c_int {
    // The filesystem's own op: its stack is the kernel's, not the hook's.
    let _kernel = crate::stack::KernelScope::enter();
    context::with_frame(Frame::Original, || {
        let k = crate::kernel::current_or_abort("VNOP_MMAP_CHECK");
        // SAFETY: dispatched with a vnop_mmap_check_args block.
        let flags = unsafe { (*(args as *const xnu::vnop_mmap_check_args)).a_flags };
        if let Some(vp) = k.vfs.vnode(arg_vnode(args)) {
            trace_vnop(&k, &vp, TraceOp::MmapCheck, 0, 0, flags);
        }
        0
    })
}

/// VNOP_PAGEIN: reads the range into the page cache.
extern "C" fn sim_vnop_pagein(args: *mut c_void) -> c_int {
    // The filesystem's own op: its stack is the kernel's, not the hook's.
    let _kernel = crate::stack::KernelScope::enter();
    crate::hold::enter(Vop::Pagein);
    context::with_frame(Frame::Original, || {
        crate::kernel::with_current("VNOP_PAGEIN", |k| original_pagein(k, args))
    })
}

/// The pagein original on the booted kernel: the read, then, like
/// `cluster_pagein` (bsd/vfs/vfs_cluster.c, xnu-11417.121.6), the commit (or
/// on error the abort) of the caller's UPL unless `UPL_NOCOMMIT`.
fn original_pagein(k: &Kernel, args: *mut c_void) -> c_int {
    // SAFETY: dispatched with a vnop_pagein_args block.
    let a = unsafe { std::ptr::read(args as *const xnu::vnop_pagein_args) };
    let err = original_pagein_io(k, args);
    if !a.a_pl.is_null() && a.a_flags & crate::upl::UPL_NOCOMMIT == 0 {
        // The range was checked by vnode_pagein, which built the UPL.
        let _ = k.upls.release_range(
            a.a_pl as usize,
            u64::from(a.a_pl_offset),
            a.a_size as u64,
            k.config.page_size,
        );
    }
    err
}

/// The read into the page cache.
fn original_pagein_io(k: &Kernel, args: *mut c_void) -> c_int {
    // SAFETY: dispatched with a vnop_pagein_args block.
    let a = unsafe { std::ptr::read(args as *const xnu::vnop_pagein_args) };
    let (off, size) = (a.a_f_offset, a.a_size as u64);
    let Some(vp) = k.vfs.vnode(arg_vnode(args)) else {
        return errno::EIO;
    };
    if off < 0 || off as u64 >= vp.size.max(1) {
        return errno::EFAULT;
    }
    cache_range(k, &vp, off as u64, size);
    trace_vnop(k, &vp, TraceOp::Pagein, off, size, a.a_flags);
    0
}

/// The pages of `size` bytes at `off` are now in `vp`'s page cache.
fn cache_range(k: &Kernel, vp: &Vnode, off: u64, size: u64) {
    let page = |byte: u64| page_of(byte, k.config.page_size);
    let first = page(off);
    let last = page(off + size.max(1) - 1);
    let mut pages = lock(&vp.pages);
    // A re-read of cached pages (one search) inserts nothing.
    if pages.range(first..=last).count() as u64 != last - first + 1 {
        pages.extend(first..=last);
    }
}

/// The page holding `byte`: a shift for the power-of-two sizes every
/// modelled machine has (a division per page bound cost more than the
/// page-cache search).
fn page_of(byte: u64, page_size: u64) -> u64 {
    if page_size.is_power_of_two() {
        byte >> page_size.trailing_zeros()
    } else {
        byte / page_size.max(1)
    }
}

/// VNOP_RECLAIM / VNOP_INACTIVE of the simulated filesystems.
pub(super) extern "C" fn sim_vnop_ok(_args: *mut c_void) -> c_int {
    0
}

/// deadfs: every operation on a reclaimed vnode fails.
pub(super) extern "C" fn dead_vnop_eio(_args: *mut c_void) -> c_int {
    errno::EIO
}

/// VNOP_LOOKUP of the simulated filesystems (never called: the model
/// resolves paths itself).
extern "C" fn sim_vnop_lookup(_args: *mut c_void) -> c_int {
    errno::ENOTSUP
}

/// Another kext's filesystem code: its own VNOP_LOOKUP, VNOP_RECLAIM and
/// VNOP_MMAP (the last forwarding to the model's), at addresses no other
/// kext's filesystem shares (each body differs, so no function merging
/// folds them into one).
macro_rules! kext_fs_code {
    ($($lookup:ident $reclaim:ident $mmap:ident $n:literal),*) => {
        $(
            extern "C" fn $lookup(_args: *mut c_void) -> c_int {
                std::hint::black_box($n);
                errno::ENOTSUP
            }
            extern "C" fn $reclaim(args: *mut c_void) -> c_int {
                std::hint::black_box($n);
                sim_vnop_ok(args)
            }
            extern "C" fn $mmap(args: *mut c_void) -> c_int {
                std::hint::black_box($n);
                sim_vnop_mmap(args)
            }
        )*
        /// (lookup, reclaim, mmap) of each modelled filesystem kext.
        fn kext_fs_code() -> Vec<[usize; 3]> {
            vec![$([
                $lookup as *const () as usize,
                $reclaim as *const () as usize,
                $mmap as *const () as usize,
            ]),*]
        }
    };
}
kext_fs_code!(
    kext0_lookup kext0_reclaim kext0_mmap 0,
    kext1_lookup kext1_reclaim kext1_mmap 1,
    kext2_lookup kext2_reclaim kext2_mmap 2,
    kext3_lookup kext3_reclaim kext3_mmap 3
);

/// The vector of the `n`th filesystem kext (mod 4): the simulated
/// operations, with that kext's own lookup, reclaim and mmap.
pub(super) fn kext_filesystem_entries(o: VopOffsets, n: usize) -> Vec<usize> {
    let mut entries = filesystem_entries(o);
    let code = kext_fs_code();
    let [lookup, reclaim, mmap] = code[n % code.len()];
    entries[o.lookup] = lookup;
    entries[o.reclaim] = reclaim;
    entries[o.mmap] = mmap;
    entries
}

/// The vector a simulated filesystem registers: its own operations where it
/// has them, `vn_default_error` elsewhere.
pub(super) fn filesystem_entries(o: VopOffsets) -> Vec<usize> {
    let default = vn_default_error as *const () as usize;
    let mut entries = vec![default; o.numops];
    entries[o.lookup] = sim_vnop_lookup as *const () as usize;
    entries[o.mmap] = sim_vnop_mmap as *const () as usize;
    entries[o.mnomap] = sim_vnop_mnomap as *const () as usize;
    entries[o.pagein] = sim_vnop_pagein as *const () as usize;
    entries[o.mmap_check] = sim_vnop_mmap_check as *const () as usize;
    entries[o.reclaim] = sim_vnop_ok as *const () as usize;
    entries[o.inactive] = sim_vnop_ok as *const () as usize;
    entries[o.close] = sim_vnop_close as *const () as usize;
    entries
}

/// The vector of a stacking filesystem (nullfs, bindfs) as its
/// `vnodeopv_entry_desc` table fills it (bsd/miscfs/nullfs/null_vnops.c
/// `nullfs_vnodeop_entries`, bsd/miscfs/bindfs/bind_vnops.c,
/// xnu-11417.121.6): no VNOP_MMAP_CHECK of its own (the default's ENOTSUP,
/// which VNOP_MMAP_CHECK turns into 0).
pub(super) fn stacking_entries(o: VopOffsets) -> Vec<usize> {
    let default = vn_default_error as *const () as usize;
    let mut entries = vec![default; o.numops];
    entries[o.mmap] = stacked_vnop_mmap as *const () as usize;
    entries[o.mnomap] = stacked_vnop_mnomap as *const () as usize;
    entries[o.close] = stacked_vnop_close as *const () as usize;
    entries[o.pagein] = stacked_vnop_pagein as *const () as usize;
    entries[o.reclaim] = stacked_vnop_reclaim as *const () as usize;
    entries[o.inactive] = sim_vnop_ok as *const () as usize;
    entries
}

/// What nullfs_mmap, nullfs_mnomap and nullfs_close (and bindfs's) do:
/// `vnode_getwithref(lvp)`, the same operation on the lower vnode through
/// its own vector (`VNOP_MMAP(lvp, ...)`: null_vnops.c:919, 945, 374;
/// bind_vnops.c:437, 456, 173, xnu-11417.121.6), `vnode_put(lvp)`. `A` is the
/// operation's argument block, copied with the lower vnode in `a_vp`.
fn forward_to_lower<A>(args: *mut c_void, op: Vop, name: &'static str) -> c_int {
    // The filesystem's own op: its stack is the kernel's, not the hook's.
    let _kernel = crate::stack::KernelScope::enter();
    context::with_frame(Frame::Original, || {
        let k = crate::kernel::current_or_abort(name);
        let Some(vp) = k.vfs.vnode(arg_vnode(args)) else {
            return errno::EIO;
        };
        let Some(lower) = vp.lower.clone() else {
            // nullfs_checkspecialvp: the root has no lower vnode.
            return 0;
        };
        if let Err(e) = k.vfs.get(&lower) {
            return e;
        }
        // SAFETY: dispatched with an `A` block; a bitwise copy of plain data.
        let mut lower_args = unsafe { std::ptr::read(args as *const A) };
        let lower_vp = (&raw mut lower_args).cast::<usize>().wrapping_add(1);
        // SAFETY: every vnop argument block starts with a_desc then a_vp.
        unsafe { lower_vp.write(lower.addr) };
        let err = k
            .vfs
            .dispatch(&k, &lower, op, (&raw mut lower_args).cast::<c_void>());
        k.vfs.put(&k, &lower);
        err
    })
}

/// nullfs_mmap / bindfs_mmap: VNOP_MMAP on the lower vnode.
extern "C" fn stacked_vnop_mmap(args: *mut c_void) -> c_int {
    forward_to_lower::<xnu::vnop_mmap_args>(args, Vop::Mmap, "VNOP_MMAP")
}

/// nullfs_mnomap / bindfs_mnomap: VNOP_MNOMAP on the lower vnode.
extern "C" fn stacked_vnop_mnomap(args: *mut c_void) -> c_int {
    forward_to_lower::<xnu::vnop_mnomap_args>(args, Vop::Mnomap, "VNOP_MNOMAP")
}

/// nullfs_close / bindfs_close: VNOP_CLOSE on the lower vnode.
extern "C" fn stacked_vnop_close(args: *mut c_void) -> c_int {
    forward_to_lower::<xnu::vnop_close_args>(args, Vop::Close, "VNOP_CLOSE")
}

/// nullfs_pagein / bindfs_pagein (null_vnops.c:1007-1090, bind_vnops.c:503,
/// xnu-11417.121.6; "relies on v1 paging": a UPL): the lower file is READ
/// into the UPL (`VNOP_READ(lvp, ...)`, its own page cache fills; no
/// VNOP_PAGEIN reaches it), then the UPL is committed unless
/// `UPL_NOCOMMIT`. A lower vnode gone (`vnode_getwithvid` fails) aborts
/// the UPL and gives EIO. Traced as the upper vnode's page-in.
extern "C" fn stacked_vnop_pagein(args: *mut c_void) -> c_int {
    // The filesystem's own op: its stack is the kernel's, not the hook's.
    let _kernel = crate::stack::KernelScope::enter();
    crate::hold::enter(Vop::Pagein);
    context::with_frame(Frame::Original, || {
        crate::kernel::with_current("VNOP_PAGEIN", |k| {
            // SAFETY: dispatched with a vnop_pagein_args block.
            let a = unsafe { std::ptr::read(args as *const xnu::vnop_pagein_args) };
            let lower = k
                .vfs
                .vnode(arg_vnode(args))
                .and_then(|vp| vp.lower.clone())
                .filter(|l| k.vfs.get(l).is_ok());
            let Some(lower) = lower else {
                if !a.a_pl.is_null() && a.a_flags & crate::upl::UPL_NOCOMMIT == 0 {
                    let _ = k.upls.release_range(
                        a.a_pl as usize,
                        u64::from(a.a_pl_offset),
                        a.a_size as u64,
                        k.config.page_size,
                    );
                }
                return errno::EIO;
            };
            let err = original_pagein(k, args);
            if err == 0 {
                cache_range(k, &lower, a.a_f_offset as u64, a.a_size as u64);
            }
            k.vfs.put(k, &lower);
            err
        })
    })
}

/// null_reclaim / bindfs_reclaim: the usecount null_nodeget took on the
/// lower vnode goes (`vnode_rele(lowervp)`, null_vnops.c:687,
/// xnu-11417.121.6).
extern "C" fn stacked_vnop_reclaim(args: *mut c_void) -> c_int {
    let _kernel = crate::stack::KernelScope::enter();
    context::with_frame(Frame::Original, || {
        let k = crate::kernel::current_or_abort("VNOP_RECLAIM");
        if let Some(lower) = k.vfs.vnode(arg_vnode(args)).and_then(|vp| vp.lower.clone()) {
            k.vfs.rele(&k, &lower);
        }
        0
    })
}
