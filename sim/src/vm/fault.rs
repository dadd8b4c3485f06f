//! Page faults: the page cache, and `vnode_pagein` in clusters.

use std::ffi::c_void;
use std::sync::atomic::Ordering;

use super::object::UPL_IOSTREAMING;
use super::{Mapping, Process, TouchStats, enter};
use crate::context::Vop;
use crate::kernel::Kernel;
use crate::lock;
use crate::vfs::{self, Vnode, errno};
use crate::violation::Violation;
use crate::xnu;

impl Kernel {
    /// Touches `[addr, addr+len)` of a mapping, faulting absent pages in.
    pub fn sys_touch(&self, p: &Process, addr: u64, len: u64) -> Result<TouchStats, i32> {
        let _g = enter(self, p);
        let m = {
            let maps = lock(&p.maps);
            maps.range(..=addr)
                .next_back()
                .map(|(_, m)| m.clone())
                .ok_or(errno::EFAULT)?
        };
        let len = len.max(1);
        if addr + len > m.addr + m.len {
            return Err(errno::EFAULT);
        }
        // A touch reads: a mapping without read (PROT_NONE; mmap adds read
        // to write and execute) is a protection failure before any pager
        // (vm_map_lookup_and_lock_object, osfmk/vm/vm_map.c,
        // xnu-11417.121.6): SIGBUS, no VNOP_PAGEIN.
        if m.prot & super::prot::READ == 0 {
            return Err(errno::EFAULT);
        }
        let ps = self.config.page_size;
        let file_pages = m.vp.size.div_ceil(ps);
        let mut st = TouchStats::default();
        let first = (addr - m.addr) / ps;
        let last = (addr + len - 1 - m.addr) / ps;
        for vpage in first..=last {
            let page = m.file_offset / ps + vpage;
            st.pages += 1;
            if m.vp.dead.load(Ordering::Acquire) || page >= file_pages {
                // SIGBUS: the file is gone or the page is past its end.
                return Err(errno::EFAULT);
            }
            if lock(&m.vp.pages).contains(&page) {
                st.hits += 1;
                // A speculative page's first use feeds the detector
                // (VM_PAGE_CONSUME_CLUSTERED, vm_fault.c:5299-5303).
                lock(&m.vp.vm_object).consume(page);
                continue;
            }
            self.pagein(p, &m, page, file_pages)?;
            st.pageins += 1;
        }
        Ok(st)
    }

    /// `vnode_pager_data_request` → `vnode_pager_cluster_read` →
    /// `vnode_pagein` → one VNOP_PAGEIN for the cluster around `page`
    /// ([`VmObject::cluster`](super::VmObject::cluster); osfmk/vm/bsd_vm.c:634-663, 842-870,
    /// xnu-11417.101.15). `a_flags` is 0 or UPL_IOSTREAMING, never
    /// UPL_IOSYNC; since macOS 11 `vnode_pagein` holds an iocount across
    /// the call (`vnode_getalways_from_pager`, bsd/vm/vnode_pager.c:629;
    /// absent in xnu-6153.141.1, the Catalina model).
    fn pagein(&self, p: &Process, m: &Mapping, page: u64, file_pages: u64) -> Result<(), i32> {
        let vp = &m.vp;
        let ps = self.config.page_size;
        let entry = (
            m.file_offset / ps,
            (m.file_offset + m.len).div_ceil(ps).min(file_pages),
        );
        let (start, end, streaming) = {
            let cached = lock(&vp.pages);
            lock(&vp.vm_object).cluster(&self.config, page, entry, file_pages, &cached)
        };
        let pageinv2 = self
            .vfs
            .mount_by_addr(vp.mount)
            .is_some_and(|m| m.fstype == "apfs");
        let size = (end - start) * ps;
        let upl = if pageinv2 { 0 } else { self.kalloc(64, "upl") };
        if upl != 0 {
            self.upls.create(upl, size, ps);
        }
        let mut args = xnu::vnop_pagein_args {
            a_desc: vfs::desc_addr(Vop::Pagein) as *mut xnu::vnodeop_desc,
            a_vp: vp.addr as xnu::vnode_t,
            a_pl: upl as xnu::upl_t,
            // PAGEINV2: the must-have page within the extent; a UPL's
            // absent run starts at its offset 0.
            a_pl_offset: if pageinv2 {
                ((page - start) * ps) as _
            } else {
                0
            },
            a_f_offset: (start * ps) as i64,
            a_size: size as usize,
            a_flags: if streaming { UPL_IOSTREAMING } else { 0 },
            a_context: p.ctx_addr as xnu::vfs_context_t,
        };
        let iocount =
            self.config.release != crate::kernel::Release::Catalina && self.vfs.get(vp).is_ok();
        let err = self
            .vfs
            .dispatch(self, vp, Vop::Pagein, (&raw mut args).cast::<c_void>());
        if iocount {
            self.vfs.put(self, vp);
        }
        if upl != 0 {
            self.upl_after_pagein(vp, upl, size, err);
            self.arena.free(upl);
        }
        lock(&vp.vm_object).paged_in(page, start, end);
        if err != 0 { Err(errno::EIO) } else { Ok(()) }
    }

    /// What `vnode_pagein` does with its UPL once VNOP_PAGEIN returned
    /// (bsd/vm/vnode_pager.c, xnu-11417.121.6, `:797-816`): it aborts it
    /// itself only for `EAGAIN` and `EPERM`; any page still busy after that
    /// is never woken, and the faulting thread (and every later one on those
    /// pages) waits forever.
    fn upl_after_pagein(&self, vp: &Vnode, upl: usize, size: u64, err: i32) {
        let ps = self.config.page_size;
        if err == errno::EAGAIN || err == errno::EPERM {
            let _ = self.upls.release_range(upl, 0, size, ps);
        }
        let busy = self.upls.busy(upl);
        self.upls.remove(upl);
        if busy > 0 {
            self.violation(Violation::Contract {
                rule: "vnop_pagein.upl_released",
                detail: format!(
                    "VNOP_PAGEIN of {} returned {err} with {busy} page(s) of its UPL still \
                     busy (neither committed nor aborted): vnode_pagein aborts only for \
                     EAGAIN/EPERM, so the faulting thread would wait forever",
                    vp.path
                ),
            });
        }
    }
}
