//! The ends of mappings and files: fork, exit, jetsam and unmount (`vclean`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{IO_NDELAY, Mapping, Process, enter};
use crate::kernel::Kernel;
use crate::lock;
use crate::vfs::errno;

impl Kernel {
    /// Unmaps everything and releases the text vnode (exit).
    fn teardown(&self, p: &Process) {
        self.teardown_as(p, p);
    }

    /// [`Kernel::teardown`] run by `actor`'s thread (a jetsam kill's is
    /// kernel_task's).
    fn teardown_as(&self, p: &Process, actor: &Process) {
        let _g = enter(self, actor);
        let maps: Vec<Mapping> = std::mem::take(&mut *lock(&p.maps)).into_values().collect();
        for m in maps {
            self.unmap_object(actor.ctx_addr, &m.vp);
        }
        if let Some(vp) = lock(&p.text).take() {
            self.vfs.rele(self, &vp);
        }
    }

    /// fork(2): the child shares the parent's open files (fileglobs) and
    /// inherits its mappings with one more reference on each file's object,
    /// without `ubc_map` (so no VNOP_MMAP), plus a text reference.
    pub fn sys_fork(&self, parent: &Process) -> Result<Arc<Process>, i32> {
        let _g = enter(self, parent);
        if parent.exited.load(Ordering::Acquire) {
            return Err(errno::ESRCH);
        }
        let name = lock(&parent.name).clone();
        let child = self.procs.create(self, &name, parent.uid, None);
        {
            let fds = lock(&parent.fds);
            let mut cfds = lock(&child.fds);
            for (fd, f) in fds.iter() {
                f.fg.refs.fetch_add(1, Ordering::AcqRel);
                cfds.insert(*fd, f.clone());
            }
            child
                .next_fd
                .store(parent.next_fd.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        {
            let maps = lock(&parent.maps);
            let mut cmaps = lock(&child.maps);
            for (addr, m) in maps.iter() {
                let mut u = lock(&m.vp.ubc);
                if u.map_count > 0 && !m.vp.dead.load(Ordering::Acquire) {
                    // vm_map_fork: vm_object_reference, no memory_object_map.
                    u.map_count += 1;
                }
                cmaps.insert(*addr, m.clone());
            }
            child
                .next_addr
                .store(parent.next_addr.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let Some(t) = lock(&parent.text).as_ref() {
            self.vfs.vref(t);
            *lock(&child.text) = Some(Arc::clone(t));
        }
        Ok(child)
    }

    /// exit(2): the task's address space and files go.
    pub fn sys_exit(&self, p: &Process) {
        if p.exited.swap(true, Ordering::AcqRel) {
            return;
        }
        self.teardown(p);
        let fds: Vec<i32> = lock(&p.fds).keys().copied().collect();
        for fd in fds {
            let _ = self.sys_close(p, fd);
        }
    }

    /// unmount(2) by `caller`; `force` is MNT_FORCE: vflush(FORCECLOSE)
    /// takes an iocount on each busy vnode (bsd/vfs/vfs_subr.c:2945,
    /// xnu-11417.101.15) and reclaims it: vclean → `ubc_destroy_named` →
    /// `vnode_pager_vrele` → `ubc_unmap`, so VNOP_MNOMAP runs in the
    /// caller's thread with iocount 2 (vflush's and ubc_unmap's), then
    /// VNOP_RECLAIM.
    ///
    /// The steps and their order are XNU's `unmount()` then
    /// `safedounmount()` (bsd/vfs/vfs_syscalls.c): `on` is looked up (a
    /// file below a mount point names that mount, not its root); the
    /// VROOT test (EINVAL) comes after `mac_mount_check_umount` up to
    /// macOS 13 (xnu-7195.141.2, xnu-8792.81.2: the Catalina model) and
    /// before it from macOS 14 (xnu-10002.81.5, xnu-11417.121.6); then
    /// `unmount.permission_after_mac`: a caller neither root nor the
    /// mount's `f_owner` gets EPERM, after the MAC policies ran.
    pub fn sys_unmount(&self, caller: &Process, on: &str, force: bool) -> Result<(), i32> {
        let _g = enter(self, caller);
        let (m, vroot) = match self.vfs.mount_on(on) {
            Some(m) => (m, true),
            None => {
                let m = self.vfs.mount_for(on).ok_or(errno::ENOENT)?;
                if !lock(&m.files).contains_key(on) {
                    return Err(errno::ENOENT);
                }
                (m, false)
            }
        };
        let mac_before_vroot = self.config.release == crate::kernel::Release::Catalina;
        if !vroot && !mac_before_vroot {
            return Err(errno::EINVAL);
        }
        // unmount(2) asks MAC with the caller's credential.
        let err = self.mac.mount_check_umount(self, caller.cred_addr, m.addr);
        if err != 0 {
            return Err(err);
        }
        if !vroot {
            return Err(errno::EINVAL);
        }
        if caller.uid != 0 && caller.uid != self.vfs.mount_owner(&m) {
            return Err(errno::EPERM);
        }
        self.dounmount(caller.ctx_addr, on, force)
    }

    /// The unmount itself (`dounmount`), reached without the MAC check the
    /// way `vfs_unmountbyfsid` (a KPI, bsd/vfs/vfs_syscalls.c) and the
    /// unmount of submounts reach it.
    pub fn unmount_unchecked(&self, on: &str, force: bool) -> Result<(), i32> {
        let kernel_task = self.procs.get(0).ok_or(errno::ESRCH)?;
        let _g = enter(self, &kernel_task);
        self.dounmount(kernel_task.ctx_addr, on, force)
    }

    /// `dounmount` in the thread whose context is `ctx`.
    fn dounmount(&self, ctx: usize, on: &str, force: bool) -> Result<(), i32> {
        let m = self.vfs.mount_on(on).ok_or(errno::ENOENT)?;
        let vnodes = self.vfs.vnodes_of(m.addr);
        if !force && vnodes.iter().any(|v| v.usecount() > 0 || v.iocount() > 0) {
            return Err(errno::EBUSY);
        }
        for vp in &vnodes {
            let held = self.vfs.get(vp).is_ok();
            // vclean(DOCLOSE) of a vnode in use: one VNOP_CLOSE for all its
            // opens, before ubc_destroy_named (bsd/vfs/vfs_subr.c,
            // xnu-11417.121.6); the opens' later closes go to deadfs.
            if held && vp.usecount() > 0 && !vp.dead.load(Ordering::Acquire) {
                self.vnop_close(ctx, vp, IO_NDELAY);
            }
            let mapped = {
                let mut u = lock(&vp.ubc);
                let n = u.map_count;
                u.map_count = 0;
                n > 0
            };
            if mapped {
                self.ubc_unmap(ctx, vp);
            }
            self.vfs.reclaim(self, vp);
            if held {
                self.vfs.put(self, vp);
            }
        }
        // Mappings of reclaimed vnodes stay in their processes, dead.
        self.vfs.detach_mount(&m);
        Ok(())
    }

    /// A jetsam (memorystatus) kill: `exit_with_reason` runs from the
    /// memorystatus kernel thread (bsd/kern/kern_memorystatus.c,
    /// jetsam_do_kill, xnu-11417.101.15), so the victim's map teardown, and
    /// its last unmaps, are kernel_task's (pid 0): the common case of a
    /// pid-0 VNOP_MNOMAP.
    pub fn sys_jetsam(&self, p: &Process) -> Result<(), i32> {
        let kernel_task = self.procs.get(0).ok_or(errno::ESRCH)?;
        if p.exited.swap(true, Ordering::AcqRel) {
            return Err(errno::ESRCH);
        }
        self.teardown_as(p, &kernel_task);
        let fds: Vec<i32> = lock(&p.fds).keys().copied().collect();
        for fd in fds {
            let _ = self.sys_close(p, fd);
        }
        Ok(())
    }
}
