//! Processes and the VM paths in XNU's order: open, mmap(2) (MAC check,
//! VNOP_MMAP_CHECK, `ubc_map`), page faults (`vnode_pagein` in clusters over a
//! page cache), munmap and the last unmap (`ubc_unmap`), exec, exit and the
//! forced unmount (`vclean`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::context::{self, ThreadIdentity, Vop};
use crate::kernel::{Kernel, TraceEvent, TraceOp};
use crate::vfs::{self, Vnode, errno, word};
use crate::violation::Violation;
use crate::xnu;
use crate::{lock, read, write};

/// PROT_* bits.
pub mod prot {
    /// Readable.
    pub const READ: i32 = 1;
    /// Writable.
    pub const WRITE: i32 = 2;
    /// Executable.
    pub const EXEC: i32 = 4;
}

/// MAP_* bits.
pub mod map_flags {
    /// Shared mapping.
    pub const SHARED: i32 = 0x1;
    /// Private (copy-on-write) mapping.
    pub const PRIVATE: i32 = 0x2;
    /// Place at exactly the given address.
    pub const FIXED: i32 = 0x10;
}

/// Offset of `fg_data` in `struct fileglob` (LP64, xnu-6153..11417).
pub const FG_DATA_OFFSET: usize = 56;

/// How open(2) opened a file: its access mode and `O_EVTONLY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpenMode {
    /// `O_RDONLY`: `FREAD`.
    #[default]
    ReadOnly,
    /// `O_RDWR`: `FREAD | FWRITE`.
    ReadWrite,
    /// `O_RDONLY | O_EVTONLY` (a kqueue/dispatch vnode watcher): `FREAD`, and
    /// the open's usecount is also a kusecount (`vnode_ref_ext`,
    /// bsd/vfs/vfs_subr.c, xnu-11417.101.15).
    EvtOnly,
}

impl OpenMode {
    /// Whether the open has `FWRITE`.
    pub fn writes(self) -> bool {
        self == OpenMode::ReadWrite
    }
}

/// One mapping of a file in a process.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// User address.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
    /// The file.
    pub vp: Arc<Vnode>,
    /// File offset of `addr`.
    pub file_offset: u64,
    /// PROT_*.
    pub prot: i32,
    /// MAP_*.
    pub flags: i32,
}

/// A `fileglob`: one open of a file, shared by the descriptors fork copies.
#[derive(Debug)]
struct Fileglob {
    addr: usize,
    refs: AtomicU32,
    mode: OpenMode,
    /// `fg_flag`: the open's FREAD | FWRITE | O_EVTONLY.
    flag: i32,
}

/// An open file.
#[derive(Clone, Debug)]
struct OpenFile {
    vp: Arc<Vnode>,
    fg: Arc<Fileglob>,
    /// Opened with O_EVTONLY: its usecount is also a kusecount.
    evtonly: bool,
}

/// A simulated process.
#[derive(Debug)]
pub struct Process {
    /// pid.
    pub pid: i32,
    /// Real and effective uid.
    pub uid: u32,
    /// `p_comm`.
    pub name: Mutex<String>,
    /// The `proc_t` object.
    pub proc_addr: usize,
    /// The `kauth_cred_t` object.
    pub cred_addr: usize,
    /// The process's `vfs_context_t`.
    pub ctx_addr: usize,
    fds: Mutex<BTreeMap<i32, OpenFile>>,
    next_fd: AtomicI32,
    maps: Mutex<BTreeMap<u64, Mapping>>,
    next_addr: AtomicU64,
    text: Mutex<Option<Arc<Vnode>>>,
    /// A spawned child's first faults (dyld's entry pages), until it starts.
    entry: Mutex<Vec<u64>>,
    /// Exited.
    pub exited: AtomicBool,
}

impl Process {
    /// Addresses of the fileglobs (opens) this process has on `vp`; fork
    /// shares them, so count distinct ones across processes.
    pub fn opens_of(&self, vp: &Arc<Vnode>) -> Vec<usize> {
        lock(&self.fds)
            .values()
            .filter(|f| Arc::ptr_eq(&f.vp, vp))
            .map(|f| f.fg.addr)
            .collect()
    }

    /// Whether `vp` is the process's text vnode.
    pub fn text_is(&self, vp: &Arc<Vnode>) -> bool {
        lock(&self.text)
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, vp))
    }
}

/// The process table.
#[derive(Default)]
pub struct Procs {
    state: RwLock<ProcsState>,
}

#[derive(Default)]
struct ProcsState {
    by_pid: BTreeMap<i32, Arc<Process>>,
    by_addr: HashMap<usize, i32>,
    next_pid: i32,
}

thread_local! {
    static THREADS: RefCell<HashMap<(u64, i32), ThreadIdentity>> = RefCell::new(HashMap::new());
}

/// Restores the previous thread identity when an operation ends.
pub struct Enter {
    prev: Option<ThreadIdentity>,
}

impl Drop for Enter {
    fn drop(&mut self) {
        context::set_identity(self.prev);
    }
}

impl Procs {
    /// pid 0, which kext start/stop and unattributed threads run as.
    pub fn create_kernel_task(&self, k: &Kernel) {
        self.create(k, "kernel_task", 0, Some(0));
    }

    /// Creates a process (`pid` None: the next free pid from 100).
    pub fn create(&self, k: &Kernel, name: &str, uid: u32, pid: Option<i32>) -> Arc<Process> {
        let proc_addr = k.kalloc(1024, "proc");
        let cred_addr = k.kalloc(256, "ucred");
        let ctx_addr = k.kalloc(16, "vfs_context");
        // struct vfs_context { thread_t vc_thread; kauth_cred_t vc_ucred; }
        word(ctx_addr).store(0, Ordering::Relaxed);
        word(ctx_addr + 8).store(cred_addr, Ordering::Relaxed);
        let mut st = write(&self.state);
        let pid = pid.unwrap_or_else(|| {
            st.next_pid = st.next_pid.max(100);
            while st.by_pid.contains_key(&st.next_pid) {
                st.next_pid += 1;
            }
            st.next_pid
        });
        let p = Arc::new(Process {
            pid,
            uid,
            name: Mutex::new(name.to_string()),
            proc_addr,
            cred_addr,
            ctx_addr,
            fds: Mutex::new(BTreeMap::new()),
            next_fd: AtomicI32::new(3),
            maps: Mutex::new(BTreeMap::new()),
            next_addr: AtomicU64::new(0x1_0000_0000),
            text: Mutex::new(None),
            entry: Mutex::new(Vec::new()),
            exited: AtomicBool::new(false),
        });
        st.by_pid.insert(pid, Arc::clone(&p));
        for a in [proc_addr, cred_addr, ctx_addr] {
            st.by_addr.insert(a, pid);
        }
        p
    }

    /// The process with `pid`.
    pub fn get(&self, pid: i32) -> Option<Arc<Process>> {
        read(&self.state).by_pid.get(&pid).cloned()
    }

    /// The process owning a proc, cred or context object.
    pub fn by_object(&self, addr: usize) -> Option<Arc<Process>> {
        let st = read(&self.state);
        st.by_addr
            .get(&addr)
            .and_then(|pid| st.by_pid.get(pid))
            .cloned()
    }

    /// Makes `addr` (a context the kext created) resolve to `pid`.
    pub fn alias(&self, addr: usize, pid: i32) {
        write(&self.state).by_addr.insert(addr, pid);
    }

    /// Forgets an alias.
    pub fn unalias(&self, addr: usize) {
        write(&self.state).by_addr.remove(&addr);
    }

    /// Every process.
    pub fn all(&self) -> Vec<Arc<Process>> {
        read(&self.state).by_pid.values().cloned().collect()
    }
}

/// Makes the calling OS thread run as a thread of `p` (on a possibly new
/// CPU) until the guard drops.
pub fn enter(k: &Kernel, p: &Process) -> Enter {
    let id = THREADS.with(|t| {
        *t.borrow_mut()
            .entry((k.boot, p.pid))
            .or_insert_with(|| k.new_thread_identity(p.pid))
    });
    let prev = context::set_identity(Some(id));
    k.migrate();
    Enter { prev }
}

/// `UPL_IOSTREAMING` (osfmk/mach/memory_object_types.h:646,
/// xnu-11417.101.15): the fault is part of a sequential stream.
pub const UPL_IOSTREAMING: i32 = 0x100;

/// `MAX_SEQUENTIAL_RUN` (osfmk/vm/vm_fault.c:427): the detector's cap.
const MAX_SEQUENTIAL_RUN: i64 = 1 << 30;

/// A file's VM object as fault clustering sees it: `last_alloc`,
/// `sequential` (pages, negative for a reverse run), `pages_created` and
/// `pages_used` of speculative pages, and which resident pages are still
/// speculative (brought in by a cluster, not yet touched).
#[derive(Debug, Default)]
pub struct VmObject {
    last_alloc: u64,
    sequential: i64,
    pages_created: u64,
    pages_used: u64,
    speculative: std::collections::BTreeSet<u64>,
}

impl VmObject {
    /// `vm_object_cluster_size` (osfmk/vm/vm_object.c:6627-6979,
    /// xnu-11417.101.15) for a default-behaviour fault on `page` with
    /// plenty of free memory: `[start, end)` in pages and whether the read
    /// streams. The pre-heat starts at the minimum (32 KiB, halved on an
    /// SSD), centred on the fault; a sequential run of 3 pages or more
    /// reads ahead only (run + 1 page, UPL_IOSTREAMING); later it grows
    /// with the share of speculative pages used, up to the maximum (1 MiB,
    /// / 8 on an SSD). It never bridges resident pages and stays inside the
    /// map entry's `[lo_offset, hi_offset)` (vm_map.c:14875-14877) and EOF.
    pub fn cluster(
        &self,
        c: &crate::kernel::Config,
        page: u64,
        (lo, hi): (u64, u64),
        file_pages: u64,
        resident: &std::collections::BTreeSet<u64>,
    ) -> (u64, u64, bool) {
        let ps = c.page_size;
        let (mut min_ph, mut max_ph) = (32 << 10, 1 << 20);
        if c.ssd {
            min_ph /= 2;
            max_ph /= 8;
        }
        let min_ph = (min_ph / ps * ps).max(ps);
        let max_ph = (max_ph / ps * ps).clamp(ps, 1 << 20);
        // vnode_pager_data_request asks for MAX_UPL_TRANSFER_BYTES.
        let max_length = max_ph;
        let one = (page, page + 1, false);
        if max_length <= ps || page >= file_pages {
            return one;
        }
        let (mut look_behind, mut look_ahead, mut streaming) = (true, true, false);
        let run = self.sequential.unsigned_abs() * ps;
        let mut pre = if run >= 3 * ps {
            if self.sequential > 0 {
                look_behind = false;
            } else {
                look_ahead = false;
            }
            streaming = true;
            run + ps
        } else if self.pages_created < 20 * (min_ph / ps) {
            // Prime the pump.
            min_ph
        } else {
            let p = max_length * self.pages_used / self.pages_created.max(1);
            if p < min_ph {
                min_ph
            } else {
                p.next_multiple_of(ps)
            }
        };
        pre = pre.min(max_length);
        let orig = page * ps;
        let object_size = file_pages * ps;
        let mut target = orig;
        let tail;
        if look_ahead {
            if look_behind {
                let head = pre / 2 / ps * ps;
                target = orig.saturating_sub(head);
            }
            if target + pre > object_size {
                pre = object_size - target;
            }
            tail = pre - (orig - target) - ps;
        } else {
            pre = pre.min(target);
            tail = 0;
        }
        if pre <= ps {
            return (page, page + 1, streaming);
        }
        let (mut start, mut end) = (page, page + 1);
        if look_behind {
            let mut head = (pre - tail - ps) / ps;
            while head > 0 && start > lo && !resident.contains(&(start - 1)) {
                start -= 1;
                head -= 1;
            }
        }
        if look_ahead {
            let mut tail = tail / ps;
            while tail > 0 && end < hi && !resident.contains(&end) {
                end += 1;
                tail -= 1;
            }
        }
        let max_pages = max_length / ps;
        if end - start > max_pages {
            end = start + max_pages;
        }
        (start, end, streaming)
    }

    /// After a page-in of `[start, end)` for `page`: the other pages are
    /// new speculative pages (`pages_created`, vm_resident.c:5710), and the
    /// fault feeds the detector (vm_fault.c:2553).
    pub fn paged_in(&mut self, page: u64, start: u64, end: u64) {
        self.speculative.remove(&page);
        for p in (start..end).filter(|p| *p != page) {
            if self.speculative.insert(p) {
                self.pages_created += 1;
            }
        }
        self.is_sequential(page);
    }

    /// A touch of a resident page: its first use as a speculative page
    /// counts (`pages_used`) and feeds the detector.
    pub fn consume(&mut self, page: u64) {
        if self.speculative.remove(&page) {
            self.pages_used += 1;
            self.is_sequential(page);
        }
    }

    /// `vm_fault_is_sequential` for VM_BEHAVIOR_DEFAULT
    /// (osfmk/vm/vm_fault.c:440-545, xnu-11417.101.15), counted in pages
    /// where XNU counts bytes of pages.
    fn is_sequential(&mut self, page: u64) {
        const P: i64 = 1;
        if page == self.last_alloc {
            return;
        }
        if page != 0 && self.last_alloc == page - 1 {
            if self.sequential < 0 {
                self.sequential = 0;
            }
            if self.sequential < MAX_SEQUENTIAL_RUN {
                self.sequential += P;
            }
        } else if self.last_alloc != 0 && self.last_alloc == page + 1 {
            if self.sequential > 0 {
                self.sequential = 0;
            }
            if self.sequential > -MAX_SEQUENTIAL_RUN {
                self.sequential -= P;
            }
        } else {
            self.sequential = 0;
        }
        self.last_alloc = page;
    }
}

/// The dynamic linker the kernel maps into every dynamic executable
/// (`LC_LOAD_DYLINKER`).
pub const DYLD_PATH: &str = "/usr/lib/dyld";

/// `p_comm` of an executable path.
fn comm_of(path: &str) -> String {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .chars()
        .take(16)
        .collect()
}

/// The calling OS thread becomes a new thread of `p` (exec's cloneproc
/// thread; its `thread_id` is new, osfmk/kern/thread.c).
fn new_thread(k: &Kernel, p: &Process) {
    let id = k.new_thread_identity(p.pid);
    let old = THREADS.with(|t| t.borrow_mut().insert((k.boot, p.pid), id));
    if let Some(old) = old {
        // The exec'ing thread ends with the old task.
        k.retire_thread(old.thread_addr);
    }
}

/// Result of touching a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TouchStats {
    /// Pages touched.
    pub pages: u64,
    /// Pages found in the page cache.
    pub hits: u64,
    /// VNOP_PAGEIN calls made.
    pub pageins: u64,
}

/// `O_EVTONLY` (bsd/sys/fcntl.h, xnu-11417.121.6): part of an event-only
/// open's fmode and fileglob flags.
pub const O_EVTONLY: i32 = 0x8000;

/// `IO_NDELAY` (bsd/sys/vnode.h, xnu-11417.121.6): vclean's VNOP_CLOSE flag.
const IO_NDELAY: i32 = 0x10;

impl Kernel {
    fn trace_mac(&self, vp: &Vnode, prot: i32, maxprot: i32, file_pos: u64) {
        self.trace_mac_op(TraceOp::FileCheckMmap, vp, prot, maxprot, file_pos);
    }

    fn trace_mac_op(&self, op: TraceOp, vp: &Vnode, prot: i32, maxprot: i32, file_pos: u64) {
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

    /// open(2) for reading.
    pub fn sys_open(&self, p: &Process, path: &str) -> Result<i32, i32> {
        self.sys_open_mode(p, path, OpenMode::ReadOnly)
    }

    /// open(2) for reading, with O_EVTONLY when `evtonly` (an event-only
    /// open, as FSEvents watchers make: its reference is a kusecount).
    pub fn sys_open_ext(&self, p: &Process, path: &str, evtonly: bool) -> Result<i32, i32> {
        let mode = if evtonly {
            OpenMode::EvtOnly
        } else {
            OpenMode::ReadOnly
        };
        self.sys_open_mode(p, path, mode)
    }

    /// open(2) with an access mode: `FWRITE` also asks kauth for
    /// WRITE_DATA, and an `O_EVTONLY` open's reference is a kusecount too.
    pub fn sys_open_mode(&self, p: &Process, path: &str, mode: OpenMode) -> Result<i32, i32> {
        let _g = enter(self, p);
        let vp = self.vfs.lookup(self, path)?;
        let cred = p.cred_addr;
        let mut action = xnu::KAUTH_VNODE_READ_DATA as i32;
        let mut fflags = 1; // FREAD
        if mode.writes() {
            action |= xnu::KAUTH_VNODE_WRITE_DATA as i32;
            fflags |= 2; // FWRITE
        }
        let result = self
            .kauth
            .authorize_vnode(self, cred, p.ctx_addr, &vp, action);
        if result == xnu::KAUTH_RESULT_DENY as i32 {
            self.vfs.put(self, &vp);
            return Err(errno::EACCES);
        }
        let err = self.mac.vnode_check_open(self, cred, &vp, fflags);
        if err != 0 {
            self.vfs.put(self, &vp);
            return Err(err);
        }
        // The open file's reference (vn_open_auth → vnode_ref_ext(vp, fmode)).
        self.vfs.vref(&vp);
        let evtonly = mode == OpenMode::EvtOnly;
        if evtonly {
            self.vfs.kusecount_add(&vp, 1);
            fflags |= O_EVTONLY;
        }
        self.mac.vnode_notify_open(self, cred, &vp, fflags);
        self.trace_mac_op(TraceOp::Open, &vp, fflags, 0, 0);
        self.kauth.fileop(
            self,
            cred,
            xnu::KAUTH_FILEOP_OPEN as i32,
            vp.addr,
            &vp.path,
            0,
        );
        self.vfs.put(self, &vp);
        let fileglob = self.kalloc(128, "fileglob");
        word(fileglob + FG_DATA_OFFSET).store(vp.addr, Ordering::Relaxed);
        let fd = p.next_fd.fetch_add(1, Ordering::Relaxed);
        let fg = Arc::new(Fileglob {
            addr: fileglob,
            refs: AtomicU32::new(1),
            mode,
            flag: fflags,
        });
        lock(&p.fds).insert(fd, OpenFile { vp, fg, evtonly });
        Ok(fd)
    }

    /// close(2).
    pub fn sys_close(&self, p: &Process, fd: i32) -> Result<(), i32> {
        let _g = enter(self, p);
        let f = lock(&p.fds).remove(&fd).ok_or(errno::EBADF)?;
        if f.fg.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            // Another process still has this open (inherited by fork).
            return Ok(());
        }
        self.kauth.fileop(
            self,
            p.cred_addr,
            xnu::KAUTH_FILEOP_CLOSE as i32,
            f.vp.addr,
            &f.vp.path,
            0,
        );
        // vn_close: VNOP_CLOSE(vp, fg_flag, ctx), then vnode_rele_ext drops
        // the open's usecount (regular files; bsd/vfs/vfs_vnops.c,
        // xnu-7195.141.2 and xnu-11417.121.6).
        self.vnop_close(p.ctx_addr, &f.vp, f.fg.flag);
        // vnode_rele_ext(vp, fg_flag): the kusecount goes first.
        if f.evtonly {
            self.vfs.kusecount_add(&f.vp, -1);
        }
        self.vfs.rele(self, &f.vp);
        self.arena.free(f.fg.addr);
        Ok(())
    }

    /// VNOP_CLOSE through the vnode's vector (the calling thread holds the
    /// vnode by the open's usecount, or vclean's iocount).
    fn vnop_close(&self, ctx: usize, vp: &Vnode, fflag: i32) {
        let mut args = xnu::vnop_close_args {
            a_desc: vfs::desc_addr(Vop::Close) as *mut xnu::vnodeop_desc,
            a_vp: vp.addr as xnu::vnode_t,
            a_fflag: fflag,
            a_context: ctx as xnu::vfs_context_t,
        };
        // The result only reaches close(2); the usecount goes regardless.
        let _ = self
            .vfs
            .dispatch(self, vp, Vop::Close, (&raw mut args).cast::<c_void>());
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
    fn map_object_for(
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
    fn ubc_unmap(&self, ctx: usize, vp: &Arc<Vnode>) {
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
    fn unmap_object(&self, ctx: usize, vp: &Arc<Vnode>) {
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
    /// ([`VmObject::cluster`]; osfmk/vm/bsd_vm.c:634-663, 842-870,
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
    pub fn sys_unmount(&self, caller: &Process, on: &str, force: bool) -> Result<(), i32> {
        let _g = enter(self, caller);
        let m = self.vfs.mount_on(on).ok_or(errno::ENOENT)?;
        // unmount(2) asks MAC with the caller's credential
        // (bsd/vfs/vfs_syscalls.c, xnu-11417.121.6).
        let err = self.mac.mount_check_umount(self, caller.cred_addr, m.addr);
        if err != 0 {
            return Err(err);
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

    /// Live mappings of a process.
    pub fn mappings(&self, p: &Process) -> Vec<Mapping> {
        lock(&p.maps).values().cloned().collect()
    }

    /// The vnode open on `fd`.
    pub fn fd_vnode(&self, p: &Process, fd: i32) -> Option<Arc<Vnode>> {
        lock(&p.fds).get(&fd).map(|f| Arc::clone(&f.vp))
    }

    /// Open descriptors of a process.
    pub fn open_fds(&self, p: &Process) -> Vec<i32> {
        lock(&p.fds).keys().copied().collect()
    }
}
