//! Vnode, mount and filesystem KPIs.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::Ordering;

use super::{k, may_block, vnode};
use crate::arena::Owner;
use crate::context::Frame;
use crate::kernel::{Kernel, booted_id, with_current};
use crate::vfs::{self, VectorInfo, errno, word};
use crate::violation::Violation;
use crate::xnu;

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

thread_local! {
    /// This thread's last `vnode_vid` answer: `(boot, lookup generation,
    /// vnode address, vid)`. A vid never changes (a recycled block gets a
    /// new identity, and every table change bumps the generation), so the
    /// answer holds while the boot and the generation are unchanged.
    static VID_MEMO: Cell<(u64, u64, usize, u32)> = const { Cell::new((0, 0, 0, 0)) };
}

#[unsafe(no_mangle)]
extern "C" fn vnode_vid(vp: xnu::vnode_t) -> u32 {
    // A KPI called from kext code, as in `with_current`.
    let _scope = crate::stack::KernelScope::enter();
    let key = (booted_id(), vfs::lookup_generation(), vp as usize);
    let (boot, generation, addr, vid) = VID_MEMO.get();
    if key.0 != 0 && (boot, generation, addr) == key {
        return vid;
    }
    vnode_vid_looked_up(vp)
}

/// `vnode_vid` from the tables (the "not a vnode" panic, or the loud abort
/// without a kernel), memoized for the thread; out of line, so the memo's
/// hit saves no registers for it.
#[cold]
#[inline(never)]
fn vnode_vid_looked_up(vp: xnu::vnode_t) -> u32 {
    with_current("vnode_vid", |k| {
        // Read before the lookup: a change in between leaves the memo
        // stale-keyed (a later miss), never wrong.
        let generation = vfs::lookup_generation();
        let Some(v) = vnode(k, "vnode_vid", vp) else {
            return 0;
        };
        VID_MEMO.set((k.boot, generation, vp as usize, v.vid));
        v.vid
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
    refuse_in_file_operation(&k, "vnode_iterate");
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

/// A walk of mounts or vnodes from a kext's MAC hook or kauth listener of
/// a file operation (open, exec, mmap): `vnode_iterate` takes each mount's
/// iterate lock, which vflush holds while it waits for iocounts and an NFS
/// sync holds across the network, and waits on vnodes being torn down
/// (bsd/vfs/vfs_subr.c vnode_iterate, mount_iterate_lock,
/// vnode_getiocount, xnu-11417.121.6): the operation could hang with no
/// bound, and one made from another kext's vnode_iterate callout would
/// take that mount's lock twice (a panic). The simulator's walks take no
/// such lock, so the call itself is the violation.
fn refuse_in_file_operation(k: &Kernel, kpi: &str) {
    if let Some(op) = crate::context::file_operation() {
        k.violation(Violation::Contract {
            rule: "vnode_iterate.not_in_file_operation",
            detail: format!("{kpi} from the kext's {op} hook"),
        });
    }
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
    refuse_in_file_operation(&k, "vfs_iterate");
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
