//! The KPI functions the kext imports, exported with their C names. Each one
//! translates to a kernel method; none unwinds (violations are recorded and
//! reported at the next safe point).

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::atomic::Ordering;

use crate::arena::Owner;
use crate::context::{self, Frame};
use crate::kernel::{Kernel, current_or_abort, with_current};
use crate::locks::LockObj;
use crate::upl::UplError;
use crate::vfs::{self, VectorInfo, Vnode, errno, word};
use crate::violation::Violation;
use crate::xnu;

/// The booted kernel, for one KPI call: while the returned handle lives,
/// the stack below is the kernel's, not the calling kext's (`stack`).
fn k(kpi: &str) -> KpiKernel {
    KpiKernel {
        _scope: crate::stack::KernelScope::enter(),
        k: current_or_abort(kpi),
    }
}

/// The kernel handle of one KPI call (see [`k`]).
struct KpiKernel {
    _scope: crate::stack::KernelScope,
    k: std::sync::Arc<Kernel>,
}

impl std::ops::Deref for KpiKernel {
    type Target = std::sync::Arc<Kernel>;
    fn deref(&self) -> &Self::Target {
        &self.k
    }
}

/// The vnode at `vp`, or a recorded panic for a bad pointer.
fn vnode(k: &Kernel, kpi: &str, vp: xnu::vnode_t) -> Option<std::sync::Arc<Vnode>> {
    let v = k.vfs.vnode(vp as usize);
    if v.is_none() {
        k.violation(Violation::KernelPanic(format!(
            "{kpi}: {:#x} is not a vnode",
            vp as usize
        )));
    }
    v
}

/// Checks for calls that may block: not in a pagein hook, not under a spinlock.
fn may_block(k: &Kernel, kpi: &str) {
    if context::in_pagein_hook() {
        k.violation(Violation::SleepInPagein(kpi.to_string()));
    }
    if context::spins_held() > 0 {
        k.violation(Violation::SpinlockHeld(kpi.to_string()));
    }
}

// ---------------------------------------------------------------- vnodes

#[unsafe(no_mangle)]
extern "C" fn vnode_isinuse(vp: xnu::vnode_t, refcnt: c_int) -> c_int {
    with_current("vnode_isinuse", |k| {
        vnode(k, "vnode_isinuse", vp)
            .map_or(0, |v| c_int::from(v.usecount() - v.kusecount() > refcnt))
    })
}

#[unsafe(no_mangle)]
extern "C" fn vnode_getwithref(vp: xnu::vnode_t) -> c_int {
    let k = k("vnode_getwithref");
    let Some(v) = vnode(&k, "vnode_getwithref", vp) else {
        return errno::ENOENT;
    };
    match k.vfs.get(&v) {
        Ok(()) => {
            v.kext_iocounts.fetch_add(1, Ordering::AcqRel);
            0
        }
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
extern "C" fn vnode_put(vp: xnu::vnode_t) -> c_int {
    let k = k("vnode_put");
    let Some(v) = vnode(&k, "vnode_put", vp) else {
        return 0;
    };
    v.kext_iocounts.fetch_sub(1, Ordering::AcqRel);
    k.vfs.put(&k, &v);
    0
}

#[unsafe(no_mangle)]
extern "C" fn vnode_ref(vp: xnu::vnode_t) -> c_int {
    let k = k("vnode_ref");
    let Some(v) = vnode(&k, "vnode_ref", vp) else {
        return errno::EINVAL;
    };
    // vnode_ref_ext panics when the caller holds no reference at all.
    if v.iocount() < 1 && v.usecount() < 1 {
        k.violation(Violation::KernelPanic(format!(
            "vnode_ref_ext: vp {:#x} ({}) has no valid reference",
            v.addr, v.path
        )));
    }
    v.kext_refs.fetch_add(1, Ordering::AcqRel);
    k.vfs.vref(&v);
    0
}

#[unsafe(no_mangle)]
extern "C" fn vnode_rele(vp: xnu::vnode_t) {
    let k = k("vnode_rele");
    if let Some(v) = vnode(&k, "vnode_rele", vp) {
        v.kext_refs.fetch_sub(1, Ordering::AcqRel);
        k.vfs.rele(&k, &v);
    }
}

#[unsafe(no_mangle)]
extern "C" fn vnode_vid(vp: xnu::vnode_t) -> u32 {
    with_current("vnode_vid", |k| {
        vnode(k, "vnode_vid", vp).map_or(0, |v| v.vid)
    })
}

#[unsafe(no_mangle)]
extern "C" fn vnode_vtype(vp: xnu::vnode_t) -> xnu::vtype {
    with_current("vnode_vtype", |k| {
        vnode(k, "vnode_vtype", vp).map_or(xnu::VBAD, |v| {
            if v.dead.load(Ordering::Acquire) {
                xnu::VBAD
            } else {
                v.vtype
            }
        })
    })
}

#[unsafe(no_mangle)]
extern "C" fn vnode_isreg(vp: xnu::vnode_t) -> c_int {
    c_int::from(vnode_vtype(vp) == xnu::VREG)
}

#[unsafe(no_mangle)]
extern "C" fn vnode_mount(vp: xnu::vnode_t) -> xnu::mount_t {
    let k = k("vnode_mount");
    vnode(&k, "vnode_mount", vp).map_or(0, |v| v.mount) as xnu::mount_t
}

#[unsafe(no_mangle)]
extern "C" fn vnode_isrecycled(vp: xnu::vnode_t) -> c_int {
    let k = k("vnode_isrecycled");
    vnode(&k, "vnode_isrecycled", vp).map_or(1, |v| c_int::from(v.dead.load(Ordering::Acquire)))
}

#[unsafe(no_mangle)]
extern "C" fn vnode_recycle(vp: xnu::vnode_t) -> c_int {
    let k = k("vnode_recycle");
    let Some(v) = vnode(&k, "vnode_recycle", vp) else {
        return 0;
    };
    v.recycle_pending.store(true, Ordering::Release);
    if v.usecount() == 0 && v.iocount() == 0 {
        k.vfs.reclaim(&k, &v);
        return 1;
    }
    0
}

#[unsafe(no_mangle)]
extern "C" fn vnode_fsnode(vp: xnu::vnode_t) -> *mut c_void {
    let k = k("vnode_fsnode");
    vnode(&k, "vnode_fsnode", vp).map_or(0, |v| v.fsnode) as *mut c_void
}

#[unsafe(no_mangle)]
extern "C" fn vnode_getname(vp: xnu::vnode_t) -> *const c_char {
    let k = k("vnode_getname");
    let Some(v) = vnode(&k, "vnode_getname", vp) else {
        return std::ptr::null();
    };
    let name = v.path.rsplit('/').next().unwrap_or("").to_string();
    let Some(buf) = k
        .arena
        .alloc(name.len() + 1, 8, false, Owner::Kext, "vnode_getname")
    else {
        return std::ptr::null();
    };
    vfs::copy_cstr(&name, buf, name.len() + 1);
    buf as *const c_char
}

#[unsafe(no_mangle)]
extern "C" fn vnode_putname(name: *const c_char) {
    let k = k("vnode_putname");
    if k.arena.free(name as usize).is_none() {
        k.violation(Violation::BadFree(format!(
            "vnode_putname({:#x}) of a name not from vnode_getname",
            name as usize
        )));
    }
}

#[unsafe(no_mangle)]
extern "C" fn vn_getpath(vp: *mut xnu::vnode, buf: *mut c_char, len: *mut c_int) -> c_int {
    let k = k("vn_getpath");
    may_block(&k, "vn_getpath");
    if vp.is_null() {
        // build_path_with_parent: NULLVP is EINVAL.
        return errno::EINVAL;
    }
    let Some(v) = vnode(&k, "vn_getpath", vp) else {
        return errno::EINVAL;
    };
    if buf.is_null() || len.is_null() {
        // vn_getpath_ext_int reads *len and build_path writes the buffer
        // unchecked: a fault in the kernel (bsd/vfs/vfs_subr.c, vfs_cache.c).
        k.violation(Violation::Contract {
            rule: "vn_getpath.buffer_and_len_nonnull",
            detail: format!(
                "vn_getpath(buf {:#x}, len {:#x})",
                buf as usize, len as usize
            ),
        });
        return errno::EINVAL;
    }
    // SAFETY: `len` is the caller's in/out length.
    let room = unsafe { *len };
    if room < 0 {
        // xnu-11417: vn_getpath_ext_int refuses a negative length with
        // EINVAL; before it (xnu-7195.141.2) build_path took *len as its
        // buffer length and answered ENOSPC (bsd/vfs/vfs_subr.c).
        return match k.config.release {
            crate::kernel::Release::Sequoia => errno::EINVAL,
            crate::kernel::Release::Catalina => errno::ENOSPC,
        };
    }
    if room <= v.path.len() as c_int {
        return errno::ENOSPC;
    }
    vfs::copy_cstr(&v.path, buf as usize, room as usize);
    // SAFETY: as above.
    unsafe { *len = v.path.len() as c_int + 1 };
    0
}

type VnodeCallout = unsafe extern "C" fn(*mut xnu::vnode, *mut c_void) -> c_int;
type MountCallout = unsafe extern "C" fn(*mut xnu::mount, *mut c_void) -> c_int;

#[unsafe(no_mangle)]
extern "C" fn vnode_iterate(
    mp: xnu::mount_t,
    flags: c_int,
    callout: Option<VnodeCallout>,
    arg: *mut c_void,
) -> c_int {
    let k = k("vnode_iterate");
    let Some(callout) = callout else {
        // vnode_iterate calls the callout unchecked (bsd/vfs/vfs_subr.c).
        k.violation(Violation::Contract {
            rule: "vnode_iterate.callout_nonnull",
            detail: "vnode_iterate with a NULL callout".into(),
        });
        return errno::EINVAL;
    };
    let flags = flags as u32;
    for v in k.vfs.vnodes_of(mp as usize) {
        let active = v.usecount() > 0;
        if (flags & xnu::VNODE_ITERATE_ACTIVE != 0 && !active)
            || (flags & xnu::VNODE_ITERATE_INACTIVE != 0 && active)
        {
            continue;
        }
        if k.vfs.get(&v).is_err() {
            continue;
        }
        // SAFETY: the kext's callout with the vnode_iterate signature.
        let r = k.kext_call(Frame::Callback, || unsafe {
            callout(v.addr as *mut xnu::vnode, arg)
        }) as u32;
        match r {
            xnu::VNODE_CLAIMED | xnu::VNODE_CLAIMED_DONE => {
                // The callout now owns the iocount and must put it.
                v.kext_iocounts.fetch_add(1, Ordering::AcqRel);
            }
            _ => k.vfs.put(&k, &v),
        }
        if r == xnu::VNODE_RETURNED_DONE || r == xnu::VNODE_CLAIMED_DONE {
            break;
        }
    }
    0
}

#[unsafe(no_mangle)]
extern "C" fn vfs_iterate(flags: c_int, callout: Option<MountCallout>, arg: *mut c_void) -> c_int {
    let k = k("vfs_iterate");
    let Some(callout) = callout else {
        // vfs_iterate calls the callout unchecked (bsd/vfs/vfs_subr.c).
        k.violation(Violation::Contract {
            rule: "vfs_iterate.callout_nonnull",
            detail: "vfs_iterate with a NULL callout".into(),
        });
        return errno::EINVAL;
    };
    let mut mounts = k.vfs.mounts();
    if flags as u32 & xnu::VFS_ITERATE_TAIL_FIRST != 0 {
        mounts.reverse();
    }
    for m in mounts {
        // SAFETY: the kext's callout with the vfs_iterate signature.
        let r = k.kext_call(Frame::Callback, || unsafe {
            callout(m.addr as *mut xnu::mount, arg)
        }) as u32;
        if r == xnu::VFS_RETURNED_DONE || r == xnu::VFS_CLAIMED_DONE {
            break;
        }
    }
    0
}

#[unsafe(no_mangle)]
extern "C" fn vfs_statfs(mp: xnu::mount_t) -> *mut xnu::vfsstatfs {
    let k = k("vfs_statfs");
    match k.vfs.mount_by_addr(mp as usize) {
        Some(m) => (m.addr + vfs::MOUNT_STATFS_OFFSET) as *mut xnu::vfsstatfs,
        None => {
            k.violation(Violation::KernelPanic(format!(
                "vfs_statfs: {:#x} is not a mount",
                mp as usize
            )));
            std::ptr::null_mut()
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn vfs_name(mp: xnu::mount_t, buf: *mut c_char) {
    let k = k("vfs_name");
    if let Some(m) = k.vfs.mount_by_addr(mp as usize) {
        vfs::copy_cstr(&m.fstype, buf as usize, xnu::MFSNAMELEN as usize + 1);
    }
}

#[unsafe(no_mangle)]
extern "C" fn vfs_fsadd(vfe: *mut xnu::vfs_fsentry, handle: *mut xnu::vfstable_t) -> xnu::errno_t {
    let k = k("vfs_fsadd");
    if vfe.is_null() || handle.is_null() {
        return errno::EINVAL;
    }
    if let Some(e) = k.config.fsadd_error {
        return e;
    }
    // SAFETY: the kext's fsentry.
    let e = unsafe { std::ptr::read(vfe) };
    k.kext_image.note(vfe as usize);
    if !(1..=8).contains(&e.vfe_vopcnt) || e.vfe_vfsops.is_null() || e.vfe_opvdescs.is_null() {
        return errno::EINVAL;
    }
    let name: String = e
        .vfe_fsname
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect();
    let o = k.vfs.offsets;
    let default_desc = vfs::default_desc_addr();
    let mut infos = Vec::new();
    for i in 0..e.vfe_vopcnt as usize {
        let slot = e.vfe_opvdescs.wrapping_add(i);
        // SAFETY: vfe_opvdescs has vfe_vopcnt entries.
        let d = unsafe { *slot };
        if d.is_null() {
            return errno::EINVAL;
        }
        // SAFETY: a vnodeopv_desc of the kext.
        let desc = unsafe { std::ptr::read(d) };
        let mut entries = vec![0usize; o.numops];
        let mut j = 0;
        loop {
            let at = desc.opv_desc_ops.wrapping_add(j);
            // SAFETY: the entry list ends with a NULL opve_op.
            let ent = unsafe { std::ptr::read(at) };
            if ent.opve_op.is_null() {
                break;
            }
            // SAFETY: opve_op points at an exported descriptor.
            let off = unsafe { (*ent.opve_op).vdesc_offset } as usize;
            if off == 0 && ent.opve_op as usize != default_desc || off >= o.numops {
                k.violation(Violation::KernelPanic("vfs_fsadd: bad operation".into()));
                return errno::EINVAL;
            }
            entries[off] = ent.opve_impl.map_or(0, |f| f as usize);
            j += 1;
        }
        if entries[o.default] == 0 {
            k.violation(Violation::KernelPanic(
                "vfs_fsadd: operation vector without default routine.".into(),
            ));
            return errno::EINVAL;
        }
        let default = entries[o.default];
        entries
            .iter_mut()
            .filter(|x| **x == 0)
            .for_each(|x| *x = default);
        let vec = k.kalloc_zero(o.numops * 8, "kext fs vector");
        for (n, f) in entries.iter().enumerate() {
            word(vec + n * 8).store(*f, Ordering::Relaxed);
        }
        let pp = desc.opv_desc_vector_p as *mut usize;
        if !pp.is_null() {
            // SAFETY: opv_desc_vector_p is the kext's vector pointer variable.
            unsafe { *pp = vec };
        }
        infos.push((
            vec,
            VectorInfo {
                originals: entries,
                owner: Owner::Kext,
                fs: name.clone(),
                freed: false,
            },
        ));
    }
    let h = k.kalloc(64, "vfstable");
    let fs = vfs::FsType {
        name,
        handle: h,
        vectors: infos.iter().map(|(a, _)| *a).collect(),
        owner: Owner::Kext,
        flags: e.vfe_flags,
        mounts: std::sync::atomic::AtomicU32::new(0),
    };
    if let Err(err) = k.vfs.add_fstype(fs, infos) {
        return err;
    }
    // SAFETY: the caller's handle out-pointer.
    unsafe { *handle = h as xnu::vfstable_t };
    // SAFETY: vfe_vfsops is the kext's vfsops.
    if let Some(init) = unsafe { (*e.vfe_vfsops).vfs_init } {
        // SAFETY: vfs_init gets the vfsconf (the handle).
        k.kext_call(Frame::Callback, || unsafe { init(h as *mut xnu::vfsconf) });
    }
    0
}

#[unsafe(no_mangle)]
extern "C" fn vfs_fsremove(handle: xnu::vfstable_t) -> xnu::errno_t {
    let k = k("vfs_fsremove");
    match k.vfs.remove_fstype(handle as usize) {
        Ok(_) => 0,
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
extern "C" fn vnode_create(
    flavor: u32,
    size: u32,
    data: *mut c_void,
    vpp: *mut xnu::vnode_t,
) -> xnu::errno_t {
    let k = k("vnode_create");
    if flavor != xnu::VNCREATE_FLAVOR
        || size as usize != size_of::<xnu::vnode_fsparam>()
        || data.is_null()
        || vpp.is_null()
    {
        return errno::EINVAL;
    }
    // SAFETY: `data` is the caller's vnode_fsparam (size checked).
    let p = unsafe { std::ptr::read(data as *const xnu::vnode_fsparam) };
    if p.vnfs_vtype == xnu::VREG && p.vnfs_mp.is_null() {
        // bsd/vfs/vfs_subr.c (vnode_create_internal, every tag xnu-3248 to
        // xnu-11417.121.6): for VREG it reads param->vnfs_mp->mnt_ioflags
        // with no NULL check, a kernel NULL dereference.
        k.violation(Violation::Contract {
            rule: "vnode_create.vreg_needs_mount",
            detail: "vnode_create of a VREG vnode with vnfs_mp == NULL \
                     (vnode_create_internal dereferences vnfs_mp->mnt_ioflags)"
                .into(),
        });
        return errno::EINVAL;
    }
    let v = k.vfs.create_vnode(&k, &p);
    v.kext_iocounts.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the caller's out-pointer.
    unsafe { *vpp = v.addr as xnu::vnode_t };
    0
}

// ---------------------------------------------------------------- UPLs

#[unsafe(no_mangle)]
extern "C" fn ubc_upl_abort_range(
    upl: xnu::upl_t,
    offset: xnu::upl_offset_t,
    size: xnu::upl_size_t,
    flags: c_int,
) -> c_int {
    let k = k("ubc_upl_abort_range");
    let r = k.upls.release_range(
        upl as usize,
        u64::from(offset),
        u64::from(size),
        k.config.page_size,
    );
    match r {
        Ok(()) => {
            let _ = flags;
            0
        }
        // bsd/kern/ubc_subr.c ubc_upl_abort_range (xnu-11417.121.6) takes the
        // UPL as live: one already committed, aborted or freed is a use after
        // free (FREE_ON_EMPTY deallocated it).
        Err(UplError::Unknown) => {
            k.violation(Violation::Contract {
                rule: "ubc_upl_abort_range.live_upl",
                detail: format!("ubc_upl_abort_range({:#x}) of no live UPL", upl as usize),
            });
            KERN_FAILURE
        }
        // osfmk/vm/vm_upl.c upl_abort_range refuses a range past the UPL's end.
        Err(UplError::OutOfRange) => {
            k.violation(Violation::Contract {
                rule: "ubc_upl_abort_range.in_range",
                detail: format!(
                    "ubc_upl_abort_range({:#x}, {offset}, {size}) outside the UPL",
                    upl as usize
                ),
            });
            KERN_FAILURE
        }
    }
}

/// `KERN_FAILURE` (osfmk/mach/kern_return.h).
const KERN_FAILURE: c_int = 5;

// ---------------------------------------------------------------- processes

fn current_process(k: &Kernel) -> Option<std::sync::Arc<crate::vm::Process>> {
    k.procs.get(k.identity().pid)
}

#[unsafe(no_mangle)]
extern "C" fn proc_suser(p: xnu::proc_t) -> c_int {
    let k = k("proc_suser");
    match k.procs.by_object(p as usize) {
        Some(p) if p.uid == 0 => 0,
        _ => errno::EPERM,
    }
}

#[unsafe(no_mangle)]
extern "C" fn kauth_cred_get() -> xnu::kauth_cred_t {
    let k = k("kauth_cred_get");
    current_process(&k).map_or(0, |p| p.cred_addr) as xnu::kauth_cred_t
}

#[unsafe(no_mangle)]
extern "C" fn kauth_cred_getuid(cred: xnu::kauth_cred_t) -> xnu::uid_t {
    let k = k("kauth_cred_getuid");
    k.procs.by_object(cred as usize).map_or(u32::MAX, |p| p.uid)
}

#[unsafe(no_mangle)]
extern "C" fn current_proc() -> xnu::proc_t {
    let k = k("current_proc");
    current_process(&k).map_or(0, |p| p.proc_addr) as xnu::proc_t
}

#[unsafe(no_mangle)]
extern "C" fn proc_selfpid() -> c_int {
    with_current("proc_selfpid", |k| k.identity().pid)
}

fn copy_name(name: &str, buf: *mut c_char, size: c_int) {
    if !buf.is_null() && size > 0 {
        vfs::copy_cstr(name, buf as usize, size as usize);
    }
}

/// proc_selfname (bsd/kern/kern_proc.c): at xnu-11417.121.6 it returns
/// for `size <= 0`, zeroes `size` bytes and copies `p_name`; at
/// xnu-7195.141.2 (the pre-12 model, [`Release::Catalina`]) it copies
/// `p_comm` with strlcpy and leaves the rest of the buffer as it was.
#[unsafe(no_mangle)]
extern "C" fn proc_selfname(buf: *mut c_char, size: c_int) {
    let k = k("proc_selfname");
    let name = current_process(&k)
        .map(|p| crate::lock(&p.name).clone())
        .unwrap_or_default();
    if k.config.release == crate::kernel::Release::Sequoia && size > 0 && !buf.is_null() {
        // SAFETY: the caller passes `size` writable bytes (the KPI's contract).
        unsafe { std::ptr::write_bytes(buf.cast::<u8>(), 0, size as usize) };
    }
    copy_name(&name, buf, size);
}

#[unsafe(no_mangle)]
extern "C" fn proc_name(pid: c_int, buf: *mut c_char, size: c_int) {
    let k = k("proc_name");
    let name = k
        .procs
        .get(pid)
        .map(|p| crate::lock(&p.name).clone())
        .unwrap_or_default();
    copy_name(&name, buf, size);
}

#[unsafe(no_mangle)]
extern "C" fn proc_pid(p: xnu::proc_t) -> c_int {
    let k = k("proc_pid");
    k.procs.by_object(p as usize).map_or(-1, |p| p.pid)
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_proc(ctx: xnu::vfs_context_t) -> xnu::proc_t {
    let k = k("vfs_context_proc");
    k.procs.by_object(ctx as usize).map_or(0, |p| p.proc_addr) as xnu::proc_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_ucred(ctx: xnu::vfs_context_t) -> xnu::kauth_cred_t {
    let k = k("vfs_context_ucred");
    k.procs.by_object(ctx as usize).map_or(0, |p| p.cred_addr) as xnu::kauth_cred_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_current() -> xnu::vfs_context_t {
    let k = k("vfs_context_current");
    current_process(&k).map_or(0, |p| p.ctx_addr) as xnu::vfs_context_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_create(ctx: xnu::vfs_context_t) -> xnu::vfs_context_t {
    let k = k("vfs_context_create");
    let p = if ctx.is_null() {
        current_process(&k)
    } else {
        k.procs.by_object(ctx as usize)
    };
    let Some(p) = p else {
        return std::ptr::null_mut();
    };
    let Some(addr) = k.arena.alloc(16, 16, true, Owner::Kext, "vfs_context") else {
        return std::ptr::null_mut();
    };
    word(addr + 8).store(p.cred_addr, Ordering::Relaxed);
    k.procs.alias(addr, p.pid);
    addr as xnu::vfs_context_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_rele(ctx: xnu::vfs_context_t) -> c_int {
    let k = k("vfs_context_rele");
    if ctx.is_null() {
        return 0;
    }
    k.procs.unalias(ctx as usize);
    if k.arena.free(ctx as usize).is_none() {
        k.violation(Violation::BadFree(format!(
            "vfs_context_rele({:#x}) of a context not from vfs_context_create",
            ctx as usize
        )));
    }
    0
}

// ---------------------------------------------------------------- kauth, MAC, sysctl

#[unsafe(no_mangle)]
extern "C" fn kauth_listen_scope(
    identifier: *const c_char,
    callback: xnu::kauth_scope_callback_t,
    idata: *mut c_void,
) -> xnu::kauth_listener_t {
    let k = k("kauth_listen_scope");
    if identifier.is_null() {
        // kauth_listen_scope strncmp()s the identifier against every scope
        // (bsd/kern/kern_authorization.c): NULL faults.
        k.violation(Violation::Contract {
            rule: "kauth_listen_scope.identifier_nonnull",
            detail: "kauth_listen_scope(NULL, ...)".into(),
        });
        return std::ptr::null_mut();
    }
    // A NULL callback is accepted and never called (the dispatcher skips
    // slots without kll_callback).
    let cb = callback.map_or(0, |f| f as usize);
    // SAFETY: the scope identifier is a C string.
    let scope = unsafe { CStr::from_ptr(identifier) }
        .to_string_lossy()
        .into_owned();
    k.kauth.listen(&k, &scope, cb, idata as usize) as xnu::kauth_listener_t
}

#[unsafe(no_mangle)]
extern "C" fn kauth_unlisten_scope(listener: xnu::kauth_listener_t) {
    let k = k("kauth_unlisten_scope");
    if !k.kauth.unlisten(listener as usize) {
        k.violation(Violation::KernelPanic(format!(
            "kauth_unlisten_scope: unknown listener {:#x}",
            listener as usize
        )));
    }
}

#[unsafe(no_mangle)]
extern "C" fn mac_policy_register(
    mpc: *mut xnu::mac_policy_conf,
    handlep: *mut xnu::mac_policy_handle_t,
    _xd: *mut c_void,
) -> c_int {
    let k = k("mac_policy_register");
    match k.mac.register(&k, mpc as usize) {
        Ok(h) => {
            if !handlep.is_null() {
                // SAFETY: the caller's out-pointer.
                unsafe { *handlep = h };
            }
            0
        }
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
extern "C" fn mac_policy_unregister(handle: xnu::mac_policy_handle_t) -> c_int {
    let k = k("mac_policy_unregister");
    match k.mac.unregister(&k, handle) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
extern "C" fn sysctl_register_oid(oidp: *mut xnu::sysctl_oid) {
    let k = k("sysctl_register_oid");
    k.sysctl.register(&k, oidp as usize);
}

#[unsafe(no_mangle)]
extern "C" fn sysctl_unregister_oid(oidp: *mut xnu::sysctl_oid) {
    let k = k("sysctl_unregister_oid");
    k.sysctl.unregister(&k, oidp as usize);
}

// ---------------------------------------------------------------- memory, log

fn iomalloc(size: xnu::vm_size_t, zero: bool, kpi: &str) -> *mut c_void {
    let k = k(kpi);
    may_block(&k, kpi);
    match k.arena.alloc(size, 16, zero, Owner::Kext, "IOMalloc") {
        Some(a) => a as *mut c_void,
        None => std::ptr::null_mut(),
    }
}

#[unsafe(no_mangle)]
extern "C" fn IOMalloc(size: xnu::vm_size_t) -> *mut c_void {
    iomalloc(size, false, "IOMalloc")
}

#[unsafe(no_mangle)]
extern "C" fn IOMallocZero(size: xnu::vm_size_t) -> *mut c_void {
    iomalloc(size, true, "IOMallocZero")
}

#[unsafe(no_mangle)]
extern "C" fn IOFree(address: *mut c_void, size: xnu::vm_size_t) {
    let k = k("IOFree");
    if address.is_null() {
        return;
    }
    let addr = address as usize;
    match k.arena.block(addr) {
        Some(b) if b.what == "IOMalloc" && b.size == size.max(1) => {
            crate::corewatch::freed(addr, b.size);
            k.arena.free(addr);
        }
        Some(b) if b.what == "IOMalloc" => {
            k.violation(Violation::BadFree(format!(
                "IOFree({addr:#x}, {size}) of a {}-byte block",
                b.size
            )));
            k.arena.free(addr);
        }
        _ => k.violation(Violation::BadFree(format!(
            "IOFree({addr:#x}) of memory not from IOMalloc (double free?)"
        ))),
    }
}

#[unsafe(no_mangle)]
extern "C" fn IOSleep(ms: c_uint) {
    let k = k("IOSleep");
    may_block(&k, "IOSleep");
    std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
}

/// Called by the C `IOLog` with the formatted line.
#[unsafe(no_mangle)]
extern "C" fn mt_sim_iolog(msg: *const c_char, len: usize) {
    let k = k("IOLog");
    // SAFETY: the C side passes `len` formatted bytes.
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    let line = String::from_utf8_lossy(bytes)
        .trim_end_matches('\n')
        .to_string();
    k.log_line(line);
}

/// Called by the C `panic`: the machine stops.
#[unsafe(no_mangle)]
extern "C" fn mt_sim_panic(msg: *const c_char, len: usize) -> ! {
    // SAFETY: the C side passes `len` formatted bytes.
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    let text = String::from_utf8_lossy(bytes).into_owned();
    eprintln!("maptrace-sim: the kext called panic(): {text}");
    if let Some(k) = crate::kernel::current() {
        k.panicked.store(true, Ordering::Release);
        k.violation(Violation::KernelPanic(text));
    }
    std::process::abort();
}

// ---------------------------------------------------------------- locks

#[unsafe(no_mangle)]
extern "C" fn lck_grp_attr_alloc_init() -> *mut xnu::lck_grp_attr_t {
    let k = k("lck_grp_attr_alloc_init");
    k.locks.alloc(&k, LockObj::GroupAttr, "lck_grp_attr") as *mut xnu::lck_grp_attr_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_grp_attr_free(attr: *mut xnu::lck_grp_attr_t) {
    let k = k("lck_grp_attr_free");
    k.locks.free(&k, attr as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_grp_alloc_init(
    name: *const c_char,
    _attr: *mut xnu::lck_grp_attr_t,
) -> *mut xnu::lck_grp_t {
    let k = k("lck_grp_alloc_init");
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: the group name is a C string.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    k.locks.alloc(&k, LockObj::Group(name), "lck_grp") as *mut xnu::lck_grp_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_grp_free(grp: *mut xnu::lck_grp_t) {
    let k = k("lck_grp_free");
    k.locks.free(&k, grp as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_alloc_init(
    _grp: *mut xnu::lck_grp_t,
    _attr: *mut xnu::lck_attr_t,
) -> *mut xnu::lck_mtx_t {
    let k = k("lck_mtx_alloc_init");
    may_block(&k, "lck_mtx_alloc_init");
    k.locks
        .alloc(&k, LockObj::Mutex(Default::default()), "lck_mtx") as *mut xnu::lck_mtx_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_lock(l: *mut xnu::lck_mtx_t) {
    let k = k("lck_mtx_lock");
    k.locks.mtx_lock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_unlock(l: *mut xnu::lck_mtx_t) {
    let k = k("lck_mtx_unlock");
    k.locks.mtx_unlock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_free(l: *mut xnu::lck_mtx_t, _grp: *mut xnu::lck_grp_t) {
    let k = k("lck_mtx_free");
    k.locks.free(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_alloc_init(
    _grp: *mut xnu::lck_grp_t,
    _attr: *mut xnu::lck_attr_t,
) -> *mut xnu::lck_spin_t {
    let k = k("lck_spin_alloc_init");
    may_block(&k, "lck_spin_alloc_init");
    k.locks
        .alloc(&k, LockObj::Spin(Default::default()), "lck_spin") as *mut xnu::lck_spin_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_lock(l: *mut xnu::lck_spin_t) {
    let k = k("lck_spin_lock");
    k.locks.spin_lock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_unlock(l: *mut xnu::lck_spin_t) {
    let k = k("lck_spin_unlock");
    k.locks.spin_unlock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_free(l: *mut xnu::lck_spin_t, _grp: *mut xnu::lck_grp_t) {
    let k = k("lck_spin_free");
    k.locks.free(&k, l as usize);
}

// ---------------------------------------------------------------- time, CPUs, threads

#[unsafe(no_mangle)]
extern "C" fn mach_absolute_time() -> u64 {
    with_current("mach_absolute_time", Kernel::abs_time)
}

#[unsafe(no_mangle)]
extern "C" fn absolutetime_to_nanoseconds(abs: u64, result: *mut u64) {
    let ns = with_current("absolutetime_to_nanoseconds", |k| k.abs_to_ns(abs));
    if !result.is_null() {
        // SAFETY: the caller's out-pointer.
        unsafe { *result = ns };
    }
}

#[unsafe(no_mangle)]
extern "C" fn current_thread() -> xnu::thread_t {
    with_current("current_thread", |k| k.identity().thread_addr) as xnu::thread_t
}

#[unsafe(no_mangle)]
extern "C" fn thread_tid(t: xnu::thread_t) -> u64 {
    with_current("thread_tid", |k| k.thread_tid(t as usize).unwrap_or(0))
}

#[unsafe(no_mangle)]
extern "C" fn cpu_number() -> c_int {
    with_current("cpu_number", |k| k.identity().cpu) as c_int
}

#[unsafe(no_mangle)]
extern "C" fn read_random(buf: *mut c_void, n: c_uint) {
    let k = k("read_random");
    if buf.is_null() {
        return;
    }
    // SAFETY: the caller's buffer of `n` bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n as usize) };
    k.random_fill(out);
}
