//! Processes and the VM paths in XNU's order: open, mmap(2) (MAC check,
//! VNOP_MMAP_CHECK, `ubc_map`), page faults (`vnode_pagein` in clusters over a
//! page cache), munmap and the last unmap (`ubc_unmap`), exec, exit and the
//! forced unmount (`vclean`).
//!
//! This file holds processes, their threads, mappings and open files. Each
//! room adds one path: `open`, `map` (mmap, munmap, `ubc_map`/`ubc_unmap`),
//! `fault`, `exec` (and posix_spawn) and `lifecycle` (fork, exit, jetsam,
//! unmount); `object` is a file's VM object (fault clustering). `exec`
//! calls into `map` and `fault`, `lifecycle` into `map` and `open`, `fault`
//! into `object`; nothing calls back.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::context::{self, ThreadIdentity};
use crate::kernel::Kernel;
use crate::vfs::{Vnode, word};
use crate::{lock, read, write};

mod exec;
mod fault;
mod lifecycle;
mod map;
mod object;
mod open;

pub use object::{UPL_IOSTREAMING, VmObject};

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
        let Some(ended) = context::set_identity(self.prev) else {
            return;
        };
        // The thread stays on the CPU it ended on: its next operation
        // migrates on from there (`Kernel::migrate` rotates per thread).
        // Not after exec replaced the thread.
        let _ = THREADS.try_with(|t| {
            if let Some(id) = t.borrow_mut().get_mut(&(ended.boot, ended.pid))
                && id.thread_addr == ended.thread_addr
            {
                id.cpu = ended.cpu;
            }
        });
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

/// `O_EVTONLY` (bsd/sys/fcntl.h, xnu-11417.121.6): part of an event-only
/// open's fmode and fileglob flags.
pub const O_EVTONLY: i32 = 0x8000;

/// `IO_NDELAY` (bsd/sys/vnode.h, xnu-11417.121.6): vclean's VNOP_CLOSE flag.
const IO_NDELAY: i32 = 0x10;

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

/// What a process has mapped and open.
impl Kernel {
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
