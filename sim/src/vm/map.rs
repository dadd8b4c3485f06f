//! mmap(2) and munmap(2): the MAC check, VNOP_MMAP_CHECK, `ubc_map`, and
//! the last unmap (`ubc_unmap`).

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Mapping, Process, enter, map_flags, prot};
use crate::context::Vop;
use crate::kernel::{Kernel, TraceEvent, TraceOp};
use crate::lock;
use crate::vfs::{self, Vnode, errno};
use crate::xnu;

impl Kernel {
    fn trace_mac(&self, vp: &Vnode, prot: i32, maxprot: i32, file_pos: u64) {
        self.trace_mac_op(TraceOp::FileCheckMmap, vp, prot, maxprot, file_pos);
    }

    /// Traces a MAC-level operation (the mmap(2) check, an open) on `vp`.
    pub(super) fn trace_mac_op(
        &self,
        op: TraceOp,
        vp: &Vnode,
        prot: i32,
        maxprot: i32,
        file_pos: u64,
    ) {
        let id = self.identity();
        self.trace(TraceEvent {
            seq: 0,
            op,
            pid: id.pid,
            tid: id.tid,
            vnode: vp.addr as u64,
            vid: vp.vid,
            path: vp.path.clone(),
            offset: file_pos as i64,
            size: 0,
            prot,
            maxprot,
        });
    }

    /// mmap(2) of an open file.
    pub fn sys_mmap(
        &self,
        p: &Process,
        fd: i32,
        len: u64,
        prot: i32,
        flags: i32,
        offset: u64,
    ) -> Result<u64, i32> {
        let _g = enter(self, p);
        let ps = self.config.page_size;
        if len == 0 || offset % ps != 0 {
            return Err(errno::EINVAL);
        }
        // Write or execute implies read, before anything sees prot
        // (bsd/kern/kern_mman.c mmap(), radar 3777787, xnu-11417.121.6).
        let prot = if prot & (prot::WRITE | prot::EXEC) != 0 {
            prot | prot::READ
        } else {
            prot
        };
        let f = lock(&p.fds).get(&fd).cloned().ok_or(errno::EBADF)?;
        let vp = f.vp;
        self.vfs.get(&vp).map_err(|_| errno::EBADF)?;
        // maxprot from the open mode (bsd/kern/kern_mman.c, mmap(),
        // xnu-11417.101.15): EXECUTE always, READ for FREAD (every mode
        // here), WRITE for a private (copy-on-write) map or a shared map of
        // an FWRITE open; a shared writable map of a read-only open is EACCES.
        let mut maxprot = prot::READ | prot::EXEC;
        if flags & map_flags::SHARED != 0 {
            if f.fg.mode.writes() {
                maxprot |= prot::WRITE;
            } else if prot & prot::WRITE != 0 {
                self.vfs.put(self, &vp);
                return Err(errno::EACCES);
            }
        } else {
            maxprot |= prot::WRITE;
        }
        let err = self.mac.file_check_mmap(
            self,
            p.cred_addr,
            f.fg.addr,
            prot,
            flags,
            offset,
            &mut maxprot,
        );
        self.trace_mac(&vp, prot, maxprot, offset);
        if err != 0 {
            self.vfs.put(self, &vp);
            return Err(err);
        }
        // A copy-on-write map never writes the file, so the filesystem is
        // asked about `prot & ~PROT_WRITE` (kern_mman.c, xnu-11417.101.15).
        let check_prot = if flags & map_flags::PRIVATE != 0 {
            prot & !prot::WRITE
        } else {
            prot
        };
        let mut args = xnu::vnop_mmap_check_args {
            a_desc: vfs::desc_addr(Vop::MmapCheck) as *mut xnu::vnodeop_desc,
            a_vp: vp.addr as xnu::vnode_t,
            a_flags: check_prot,
            a_context: p.ctx_addr as xnu::vfs_context_t,
        };
        let err = self
            .vfs
            .dispatch(self, &vp, Vop::MmapCheck, (&raw mut args).cast::<c_void>());
        if err == errno::EPERM {
            self.vfs.put(self, &vp);
            return Err(err);
        }
        // A current protection beyond the maximum (a MAC policy lowered it)
        // is KERN_INVALID_ARGUMENT, EINVAL to mmap(2):
        // vm_sanitize_cur_and_max_prots, osfmk/vm/vm_sanitize.c,
        // xnu-11417.101.15.
        if prot & !maxprot != 0 {
            self.vfs.put(self, &vp);
            return Err(errno::EINVAL);
        }
        let r = self.map_object(p, &vp, len, prot, maxprot, flags, offset);
        self.vfs.put(self, &vp);
        r
    }

    /// vm_map_enter of a file's object: one more mapping, then
    /// `memory_object_map` → `ubc_map` as osfmk/vm/vm_map.c
    /// (xnu-11417.101.15) calls it. `vm_map_enter_mem_object_control` calls
    /// it once for the named object with `pager_prot` = the max protection,
    /// minus WRITE for a copy-on-write map. A shared map then hands the same
    /// named object to `vm_map_enter`, which calls it a second time; a
    /// private one hands it an unnamed copy object (vnode objects are
    /// COPY_DELAY), so once. Exec segments are copy-on-write: once.
    #[allow(clippy::too_many_arguments)]
    fn map_object(
        &self,
        p: &Process,
        vp: &Arc<Vnode>,
        len: u64,
        prot: i32,
        maxprot: i32,
        flags: i32,
        offset: u64,
    ) -> Result<u64, i32> {
        self.map_object_for(p, p, vp, len, prot, maxprot, flags, offset)
    }

    /// [`Kernel::map_object`] into `p`'s address space by `mapper`'s thread
    /// (posix_spawn maps the child's image from the parent).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map_object_for(
        &self,
        mapper: &Process,
        p: &Process,
        vp: &Arc<Vnode>,
        len: u64,
        prot: i32,
        maxprot: i32,
        flags: i32,
        offset: u64,
    ) -> Result<u64, i32> {
        let ps = self.config.page_size;
        let len = len.next_multiple_of(ps);
        lock(&vp.ubc).map_count += 1;
        let shared = flags & map_flags::SHARED != 0;
        let pager_prot = if shared {
            maxprot
        } else {
            maxprot & !prot::WRITE
        };
        self.ubc_map(mapper, vp, pager_prot);
        if shared {
            self.ubc_map(mapper, vp, pager_prot);
        }
        let addr = p.next_addr.fetch_add(len + ps, Ordering::Relaxed);
        lock(&p.maps).insert(
            addr,
            Mapping {
                addr,
                len,
                vp: Arc::clone(vp),
                file_offset: offset,
                prot,
                flags,
            },
        );
        Ok(addr)
    }

    /// `ubc_map`: VNOP_MMAP on every call with `a_fflags` = the pager
    /// protection; one usecount per mapped epoch, taken after VNOP_MMAP
    /// (bsd/kern/ubc_subr.c, xnu-11417.101.15).
    fn ubc_map(&self, p: &Process, vp: &Arc<Vnode>, prot: i32) {
        {
            let mut u = lock(&vp.ubc);
            while u.mapbusy {
                u = vp.ubc_cv.wait(u).unwrap_or_else(|e| e.into_inner());
            }
            u.mapbusy = true;
        }
        let mut args = xnu::vnop_mmap_args {
            a_desc: vfs::desc_addr(Vop::Mmap) as *mut xnu::vnodeop_desc,
            a_vp: vp.addr as xnu::vnode_t,
            a_fflags: prot,
            a_context: p.ctx_addr as xnu::vfs_context_t,
        };
        // rdar://22587101: the error is not propagated.
        let _ = self
            .vfs
            .dispatch(self, vp, Vop::Mmap, (&raw mut args).cast::<c_void>());
        let need_ref = {
            let mut u = lock(&vp.ubc);
            let need = !u.ismapped;
            u.ismapped = true;
            u.wasmapped = true;
            if prot & prot::WRITE != 0 {
                u.mappedwrite = true;
            }
            u.mapbusy = false;
            vp.ubc_cv.notify_all();
            need
        };
        if need_ref {
            // vnode_ref_ext(vp, 0, VNODE_REF_FORCE).
            self.vfs.vref(vp);
        }
    }

    /// `ubc_unmap`: VNOP_MNOMAP once, then the mapping reference goes.
    pub(super) fn ubc_unmap(&self, ctx: usize, vp: &Arc<Vnode>) {
        if self.vfs.get(vp).is_err() {
            return;
        }
        let need_rele = {
            let mut u = lock(&vp.ubc);
            while u.mapbusy {
                u = vp.ubc_cv.wait(u).unwrap_or_else(|e| e.into_inner());
            }
            u.mapbusy = true;
            u.ismapped
        };
        if need_rele {
            let mut args = xnu::vnop_mnomap_args {
                a_desc: vfs::desc_addr(Vop::Mnomap) as *mut xnu::vnodeop_desc,
                a_vp: vp.addr as xnu::vnode_t,
                a_context: ctx as xnu::vfs_context_t,
            };
            let _ = self
                .vfs
                .dispatch(self, vp, Vop::Mnomap, (&raw mut args).cast::<c_void>());
            self.vfs.rele(self, vp);
        }
        {
            let mut u = lock(&vp.ubc);
            if need_rele {
                u.ismapped = false;
                u.mappedwrite = false;
            }
            u.mapbusy = false;
            vp.ubc_cv.notify_all();
        }
        self.vfs.put(self, vp);
    }

    /// Drops one mapping of a file's object; the last one unmaps.
    pub(super) fn unmap_object(&self, ctx: usize, vp: &Arc<Vnode>) {
        let last = {
            let mut u = lock(&vp.ubc);
            if u.map_count == 0 {
                // Already torn down by a forced unmount.
                return;
            }
            u.map_count -= 1;
            u.map_count == 0
        };
        if last {
            // vnode_pager_last_unmap.
            self.ubc_unmap(ctx, vp);
        }
    }

    /// munmap(2) of a whole mapping starting at `addr`.
    pub fn sys_munmap(&self, p: &Process, addr: u64) -> Result<(), i32> {
        let _g = enter(self, p);
        let m = lock(&p.maps).remove(&addr).ok_or(errno::EINVAL)?;
        self.unmap_object(p.ctx_addr, &m.vp);
        Ok(())
    }
}
