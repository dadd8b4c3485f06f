//! execve(2) and posix_spawn(2): loading a Mach-O and dyld.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{DYLD_PATH, Mapping, Process, TouchStats, comm_of, enter, map_flags, new_thread, prot};
use crate::kernel::Kernel;
use crate::lock;
use crate::vfs::{Vnode, errno};
use crate::xnu;

impl Kernel {
    /// execve(2) in bsd/kern/kern_exec.c's order (xnu-11417.101.15): the
    /// new image and `/usr/lib/dyld` are mapped (no MAC mmap check) while
    /// the old address space still stands, FILEOP_EXEC, the text reference
    /// moves to the new image, and only then is the old task terminated
    /// (its last unmaps). The image then runs on cloneproc's new thread,
    /// where dyld faults the entry page and the first `__DATA` page.
    pub fn sys_exec(&self, p: &Process, path: &str) -> Result<(), i32> {
        let g = enter(self, p);
        let vp = self.vfs.lookup(self, path)?;
        let result = self.kauth.authorize_vnode(
            self,
            p.cred_addr,
            p.ctx_addr,
            &vp,
            xnu::KAUTH_VNODE_EXECUTE as i32,
        );
        let err = self.mac.vnode_check_exec(self, p.cred_addr, &vp);
        if result == xnu::KAUTH_RESULT_DENY as i32 || err != 0 {
            self.vfs.put(self, &vp);
            return Err(errno::EACCES);
        }
        // The old image stays mapped while the new one loads
        // (__mac_execve: exec_activate_image before task_terminate_internal).
        let old: Vec<Mapping> = std::mem::take(&mut *lock(&p.maps)).into_values().collect();
        let entry = match self.load_image(p, p, &vp) {
            Ok(e) => e,
            Err(e) => {
                // Nothing of the new image stays; the old one is back.
                let new: Vec<Mapping> = std::mem::take(&mut *lock(&p.maps)).into_values().collect();
                for m in new {
                    self.unmap_object(p.ctx_addr, &m.vp);
                }
                lock(&p.maps).extend(old.into_iter().map(|m| (m.addr, m)));
                self.vfs.put(self, &vp);
                return Err(e);
            }
        };
        self.kauth.fileop(
            self,
            p.cred_addr,
            xnu::KAUTH_FILEOP_EXEC as i32,
            vp.addr,
            &vp.path,
            0,
        );
        // exec_resettextvp (kern_exec.c:7773-7803): ref the new text, then
        // release the old.
        self.vfs.vref(&vp);
        if let Some(t) = lock(&p.text).replace(Arc::clone(&vp)) {
            self.vfs.rele(self, &t);
        }
        *lock(&p.name) = comm_of(path);
        self.vfs.put(self, &vp);
        // task_terminate_internal(old_task) → vm_map_terminate: the old
        // image's last unmaps, in the exec'ing thread.
        for m in old {
            self.unmap_object(p.ctx_addr, &m.vp);
        }
        drop(g);
        // The image runs on the thread cloneproc made (kern_exec.c:5498),
        // which tells the MAC policies before its first return to user
        // space (task_wait_to_return, osfmk/kern/task.c, xnu-11417.121.6).
        new_thread(self, p);
        self.exec_complete(p);
        self.fault_entry(p, &entry).map(|_| ())
    }

    /// posix_spawn(2): the child's image and dyld are mapped by the
    /// parent's thread (load_machfile runs there, kern_exec.c:4511,
    /// xnu-11417.101.15; `ubc_map` uses `vfs_context_current()`), so their
    /// VNOP_MMAPs are the parent's; the child gets the text reference and
    /// faults its entry pages itself when it starts ([`Kernel::sys_start`]).
    /// The child inherits no descriptors (POSIX_SPAWN_CLOEXEC_DEFAULT, as
    /// launchd spawns).
    pub fn sys_spawn(&self, parent: &Process, path: &str) -> Result<Arc<Process>, i32> {
        let g = enter(self, parent);
        if parent.exited.load(Ordering::Acquire) {
            return Err(errno::ESRCH);
        }
        let vp = self.vfs.lookup(self, path)?;
        let result = self.kauth.authorize_vnode(
            self,
            parent.cred_addr,
            parent.ctx_addr,
            &vp,
            xnu::KAUTH_VNODE_EXECUTE as i32,
        );
        let err = self.mac.vnode_check_exec(self, parent.cred_addr, &vp);
        if result == xnu::KAUTH_RESULT_DENY as i32 || err != 0 {
            self.vfs.put(self, &vp);
            return Err(errno::EACCES);
        }
        let child = self.procs.create(self, &comm_of(path), parent.uid, None);
        let entry = match self.load_image(parent, &child, &vp) {
            Ok(e) => e,
            Err(e) => {
                let new: Vec<Mapping> = std::mem::take(&mut *lock(&child.maps))
                    .into_values()
                    .collect();
                for m in new {
                    self.unmap_object(parent.ctx_addr, &m.vp);
                }
                child.exited.store(true, Ordering::Release);
                self.vfs.put(self, &vp);
                return Err(e);
            }
        };
        self.kauth.fileop(
            self,
            parent.cred_addr,
            xnu::KAUTH_FILEOP_EXEC as i32,
            vp.addr,
            &vp.path,
            0,
        );
        self.vfs.vref(&vp);
        *lock(&child.text) = Some(Arc::clone(&vp));
        self.vfs.put(self, &vp);
        drop(g);
        *lock(&child.entry) = entry;
        Ok(child)
    }

    /// A spawned child's first run: dyld faults the entry pages in the
    /// child's own thread.
    pub fn sys_start(&self, p: &Process) -> Result<TouchStats, i32> {
        let entry = std::mem::take(&mut *lock(&p.entry));
        if !entry.is_empty() {
            // The first run only (a started child has no entry left).
            self.exec_complete(p);
        }
        self.fault_entry(p, &entry)
    }

    /// mac_proc_notify_exec_complete on `p`'s own thread: the spawned or
    /// exec'd image is about to run its first user instruction
    /// (task_wait_to_return, osfmk/kern/task.c, xnu-11417.121.6).
    fn exec_complete(&self, p: &Process) {
        let _g = enter(self, p);
        self.mac.proc_notify_exec_complete(self, p.proc_addr);
    }

    fn fault_entry(&self, p: &Process, entry: &[u64]) -> Result<TouchStats, i32> {
        let mut st = TouchStats::default();
        for a in entry {
            let t = self.sys_touch(p, *a, 1)?;
            st.pages += t.pages;
            st.hits += t.hits;
            st.pageins += t.pageins;
        }
        Ok(st)
    }

    /// load_machfile as `mapper`'s thread for `target`'s address space: the
    /// image's header is read with `vn_rdwr` (VNOP_READ through the page
    /// cache, not a page-in: kern_exec.c:2533, mach_loader.c get_macho_vnode),
    /// its segments mapped copy-on-write (map_segment →
    /// vm_map_enter_mem_object_control, mach_loader.c:1884-1895), then
    /// `/usr/lib/dyld`'s the same way when the volume has one
    /// (load_dylinker, mach_loader.c:2883-2984). Returns the addresses dyld
    /// faults first: an entry page inside `__TEXT` and the first `__DATA`
    /// page.
    fn load_image(
        &self,
        mapper: &Process,
        target: &Process,
        vp: &Arc<Vnode>,
    ) -> Result<Vec<u64>, i32> {
        let segs = self.map_macho(mapper, target, vp)?;
        let mut entry = Vec::new();
        if let Some(&(a, n)) = segs.first() {
            // The entry point lies past the header page in __TEXT.
            entry.push(a + n / 2 * self.config.page_size);
        }
        if let Some(&(a, _)) = segs.get(1) {
            entry.push(a);
        }
        let Ok(dyld) = self.vfs.lookup(self, DYLD_PATH) else {
            return Ok(entry);
        };
        let allowed = self.kauth.authorize_vnode(
            self,
            mapper.cred_addr,
            mapper.ctx_addr,
            &dyld,
            (xnu::KAUTH_VNODE_EXECUTE | xnu::KAUTH_VNODE_READ_DATA) as i32,
        ) != xnu::KAUTH_RESULT_DENY as i32;
        let r = if allowed {
            self.map_macho(mapper, target, &dyld).map(|_| entry)
        } else {
            Err(errno::EACCES)
        };
        self.vfs.put(self, &dyld);
        r
    }

    /// The header read and `map_segment` of one Mach-O: `__TEXT` r-x,
    /// `__DATA` rw- and `__LINKEDIT` r--, each copy-on-write so VNOP_MMAP
    /// sees its maxprot minus WRITE. Returns (address, pages) per segment.
    fn map_macho(
        &self,
        mapper: &Process,
        target: &Process,
        vp: &Arc<Vnode>,
    ) -> Result<Vec<(u64, u64)>, i32> {
        let ps = self.config.page_size;
        // get_macho_vnode's vn_rdwr of the header: page 0 is now cached.
        lock(&vp.pages).insert(0);
        let pages = vp.size.div_ceil(ps).max(1);
        let text = (pages / 2).max(1);
        let data = pages / 4;
        let linkedit = pages - text - data;
        let segs = [
            (0, text, prot::READ | prot::EXEC),
            (text, data, prot::READ | prot::WRITE),
            (text + data, linkedit, prot::READ),
        ];
        let mut out = Vec::new();
        for (start, n, pr) in segs {
            if n == 0 {
                continue;
            }
            // map_segment: the segment's maxprot (here its initprot).
            let a = self.map_object_for(
                mapper,
                target,
                vp,
                n * ps,
                pr,
                pr,
                map_flags::PRIVATE,
                start * ps,
            )?;
            out.push((a, n));
        }
        Ok(out)
    }
}
