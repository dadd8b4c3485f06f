//! VFS: vnode-op descriptors and vectors, filesystems, mounts and vnodes laid
//! out like XNU's, and the dispatch `(*vp->v_op[desc.vdesc_offset])(&args)`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{c_int, c_void};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockWriteGuard};
use std::thread::LocalKey;

use crate::arena::{Arena, Owner};
use crate::context::{self, Frame, Vop};
use crate::kernel::{Config, Kernel, Release, TraceEvent, TraceOp};
use crate::violation::Violation;
use crate::xnu;
use crate::{lock, read, write};

/// Generation of every VFS's vnode and vector tables: bumped under the write
/// lock before any change, so a per-thread lookup cache filled under the read
/// lock at generation `g` is exact while the generation is still `g`.
static LOOKUP_GEN: AtomicU64 = AtomicU64::new(0);

/// One thread's last lookup in a VFS table.
struct Cached<T> {
    table: usize,
    generation: u64,
    addr: usize,
    value: Arc<T>,
}

type LookupCache<T> = RefCell<Option<Cached<T>>>;

thread_local! {
    static VNODE_CACHE: LookupCache<Vnode> = const { RefCell::new(None) };
    static VECTOR_CACHE: LookupCache<VectorInfo> = const { RefCell::new(None) };
}

/// `find(table)` under the table's read lock, answered from the thread's
/// cache while nothing changed: XNU reads these as fields, with no lock shared
/// between CPUs.
fn cached_lookup<M, T>(
    cache: &'static LocalKey<LookupCache<T>>,
    table: &RwLock<M>,
    addr: usize,
    find: impl FnOnce(&M) -> Option<Arc<T>>,
) -> Option<Arc<T>> {
    let key = std::ptr::from_ref(table) as usize;
    let generation = LOOKUP_GEN.load(Ordering::Acquire);
    let hit = cache.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|e| e.table == key && e.addr == addr && e.generation == generation)
            .map(|e| Arc::clone(&e.value))
    });
    if hit.is_some() {
        return hit;
    }
    let (generation, found) = {
        let t = read(table);
        // Read under the lock: no change is under way.
        (LOOKUP_GEN.load(Ordering::Acquire), find(&t))
    };
    if let Some(value) = &found {
        let entry = Cached {
            table: key,
            generation,
            addr,
            value: Arc::clone(value),
        };
        // The old entry drops after the borrow ends.
        let old = cache.with(|c| c.borrow_mut().replace(entry));
        drop(old);
    }
    found
}

/// `table` write-locked, with the lookup caches invalidated.
fn write_invalidating<M>(table: &RwLock<M>) -> RwLockWriteGuard<'_, M> {
    let t = write(table);
    LOOKUP_GEN.fetch_add(1, Ordering::AcqRel);
    t
}

/// Bytes of a simulated `struct vnode`.
pub const VNODE_SIZE: usize = 256;
/// LP64 offsets stable from 10.12 to 15.x.
pub const V_KUSECOUNT: usize = 92;
/// See `V_KUSECOUNT`.
pub const V_USECOUNT: usize = 96;
/// See `V_KUSECOUNT`.
pub const V_IOCOUNT: usize = 100;
/// Bytes of a simulated `struct mount`; `vfsstatfs` sits inside it.
const MOUNT_SIZE: usize = 4096;
/// Where the `vfsstatfs` sits in a mount block.
pub const MOUNT_STATFS_OFFSET: usize = 1024;

/// errno values the paths return.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file.
    pub const ENOENT: i32 = 2;
    /// I/O error (dead vnode).
    pub const EIO: i32 = 5;
    /// No such process.
    pub const ESRCH: i32 = 3;
    /// Bad descriptor.
    pub const EBADF: i32 = 9;
    /// Out of memory / buffer too small.
    pub const ENOMEM: i32 = 12;
    /// Permission denied.
    pub const EACCES: i32 = 13;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Busy.
    pub const EBUSY: i32 = 16;
    /// Resource temporarily unavailable (macOS value).
    pub const EAGAIN: i32 = 35;
    /// Exists.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space.
    pub const ENOSPC: i32 = 28;
    /// Not supported.
    pub const ENOTSUP: i32 = 45;
}

unsafe extern "C" {
    static mut vnop_default_desc: xnu::vnodeop_desc;
    static mut vnop_mmap_desc: xnu::vnodeop_desc;
    static mut vnop_mnomap_desc: xnu::vnodeop_desc;
    static mut vnop_close_desc: xnu::vnodeop_desc;
    static mut vnop_pagein_desc: xnu::vnodeop_desc;
    static mut vnop_mmap_check_desc: xnu::vnodeop_desc;
    static mut vnop_reclaim_desc: xnu::vnodeop_desc;
    static mut vnop_inactive_desc: xnu::vnodeop_desc;
    fn vn_default_error() -> c_int;
}

/// The descriptor list `vfs_op_init` numbers, in XNU's `vfs_op_descs` order.
/// 15.x has entries 10.15 lacks, so every offset after them moves.
fn desc_names(release: Release) -> Vec<&'static str> {
    let mut v = vec![
        "vnop_default",
        "vnop_strategy",
        "vnop_bwrite",
        "vnop_lookup",
        "vnop_create",
        "vnop_mknod",
        "vnop_whiteout",
        "vnop_open",
        "vnop_compound_open",
        "vnop_close",
        "vnop_access",
        "vnop_getattr",
        "vnop_setattr",
        "vnop_read",
        "vnop_write",
        "vnop_ioctl",
        "vnop_select",
        "vnop_exchange",
        "vnop_kqfilt_add",
        "vnop_kqfilt_remove",
        "vnop_setlabel",
        "vnop_revoke",
        "vnop_mmap",
        "vnop_mnomap",
        "vnop_fsync",
        "vnop_remove",
        "vnop_compound_remove",
        "vnop_link",
        "vnop_rename",
        "vnop_compound_rename",
        "vnop_renamex",
        "vnop_mkdir",
        "vnop_compound_mkdir",
        "vnop_rmdir",
        "vnop_compound_rmdir",
        "vnop_symlink",
        "vnop_readdir",
        "vnop_readdirattr",
        "vnop_getattrlistbulk",
        "vnop_readlink",
        "vnop_inactive",
        "vnop_reclaim",
        "vnop_print",
        "vnop_pathconf",
        "vnop_advlock",
        "vnop_truncate",
        "vnop_allocate",
        "vnop_pagein",
        "vnop_pageout",
        "vnop_searchfs",
        "vnop_copyfile",
        "vnop_clonefile",
        "vnop_blktooff",
        "vnop_offtoblk",
        "vnop_blockmap",
        "vnop_monitor",
        "vnop_getxattr",
        "vnop_setxattr",
        "vnop_removexattr",
        "vnop_listxattr",
        "vnop_getnamedstream",
        "vnop_makenamedstream",
        "vnop_removenamedstream",
        "vnop_mmap_check",
    ];
    if release == Release::Sequoia {
        // Operations added after 10.15, ahead of the ones maptrace uses.
        v.insert(8, "vnop_compound_open_ext");
        v.insert(17, "vnop_verify");
        v.insert(21, "vnop_getattrlistbulk_ext");
    }
    v
}

/// Offsets `vfs_op_init` assigned at this boot.
#[derive(Clone, Copy, Debug)]
pub struct VopOffsets {
    /// Entries per vector (`vfs_opv_numops`).
    pub numops: usize,
    /// vnop_default.
    pub default: usize,
    /// vnop_mmap.
    pub mmap: usize,
    /// vnop_mnomap.
    pub mnomap: usize,
    /// vnop_pagein.
    pub pagein: usize,
    /// vnop_mmap_check.
    pub mmap_check: usize,
    /// vnop_reclaim.
    pub reclaim: usize,
    /// vnop_inactive.
    pub inactive: usize,
    /// vnop_close.
    pub close: usize,
}

impl VopOffsets {
    fn of(&self, op: Vop) -> usize {
        match op {
            Vop::Mmap => self.mmap,
            Vop::Mnomap => self.mnomap,
            Vop::Pagein => self.pagein,
            Vop::MmapCheck => self.mmap_check,
            Vop::Reclaim => self.reclaim,
            Vop::Close => self.close,
        }
    }
}

/// Writes `off` into an exported descriptor.
fn set_desc(desc: *mut xnu::vnodeop_desc, off: usize) {
    // SAFETY: `desc` is one of the C descriptor statics; only boot writes it,
    // while the boot lock excludes every other simulator.
    unsafe { (*desc).vdesc_offset = off as c_int };
}

/// Address of an exported descriptor.
pub fn desc_addr(op: Vop) -> usize {
    match op {
        Vop::Mmap => (&raw const vnop_mmap_desc) as usize,
        Vop::Mnomap => (&raw const vnop_mnomap_desc) as usize,
        Vop::Pagein => (&raw const vnop_pagein_desc) as usize,
        Vop::MmapCheck => (&raw const vnop_mmap_check_desc) as usize,
        Vop::Reclaim => (&raw const vnop_reclaim_desc) as usize,
        Vop::Close => (&raw const vnop_close_desc) as usize,
    }
}

/// Address of `vnop_default_desc`.
pub fn default_desc_addr() -> usize {
    (&raw const vnop_default_desc) as usize
}

/// A vnode-op vector the kernel knows.
#[derive(Clone, Debug)]
pub struct VectorInfo {
    /// The entries as the filesystem registered them.
    pub originals: Vec<usize>,
    /// Kernel filesystem or kext filesystem.
    pub owner: Owner,
    /// Filesystem name.
    pub fs: String,
    /// Freed by vfs_fsremove.
    pub freed: bool,
}

/// A registered filesystem type.
#[derive(Debug)]
pub struct FsType {
    /// `vfe_fsname`.
    pub name: String,
    /// The `vfstable_t` handle.
    pub handle: usize,
    /// Vectors, one per `vnodeopv_desc`.
    pub vectors: Vec<usize>,
    /// Who registered it.
    pub owner: Owner,
    /// `vfe_flags`.
    pub flags: u32,
    /// Live mounts.
    pub mounts: AtomicU32,
}

/// Unified-buffer-cache state of a vnode (`ubc_info`).
#[derive(Debug, Default)]
pub struct Ubc {
    /// UI_ISMAPPED: the mapping usecount is held.
    pub ismapped: bool,
    /// UI_WASMAPPED.
    pub wasmapped: bool,
    /// UI_MAPPEDWRITE.
    pub mappedwrite: bool,
    /// UI_MAPBUSY: a map/unmap is in VNOP_MMAP/VNOP_MNOMAP.
    pub mapbusy: bool,
    /// Live mappings of the file's VM object.
    pub map_count: u32,
}

/// One vnode identity. Recycling gives the block a new identity (vid + 1).
#[derive(Debug)]
pub struct Vnode {
    /// Address of the `struct vnode` block.
    pub addr: usize,
    /// `v_id`.
    pub vid: u32,
    /// `enum vtype`.
    pub vtype: u32,
    /// Mount address (0 for a vnode created without one).
    pub mount: usize,
    /// Path, for vn_getpath.
    pub path: String,
    /// File size.
    pub size: u64,
    /// `vnfs_fsnode`.
    pub fsnode: usize,
    /// ubc_info.
    pub ubc: Mutex<Ubc>,
    /// Wakes UI_MAPBUSY waiters.
    pub ubc_cv: Condvar,
    /// Resident pages (page indices).
    pub pages: Mutex<BTreeSet<u64>>,
    /// The VM object's fault-clustering state.
    pub vm_object: Mutex<crate::vm::VmObject>,
    /// Reclaimed (VL_DEAD).
    pub dead: AtomicBool,
    /// vnode_recycle asked for reclaim once unused.
    pub recycle_pending: AtomicBool,
    /// The block went back to the free list.
    pub freed: AtomicBool,
    /// iocounts the kext took through vnode_getwithref and not yet put.
    pub kext_iocounts: AtomicI32,
    /// usecounts the kext took through vnode_ref and not yet released.
    pub kext_refs: AtomicI32,
}

/// Where `v_kusecount` sits in this boot's vnodes (`Config::counts_offset`);
/// one kernel per process, set by `Vfs::new` at boot.
static COUNTS_BASE: AtomicUsize = AtomicUsize::new(V_KUSECOUNT);

/// Atomic view of an i32 field of a vnode block.
fn field_i32(addr: usize, off: usize) -> &'static AtomicI32 {
    // The three counts move together when the boot config says so.
    let off = match off {
        V_KUSECOUNT | V_USECOUNT | V_IOCOUNT => {
            off - V_KUSECOUNT + COUNTS_BASE.load(Ordering::Relaxed)
        }
        _ => off,
    };
    // SAFETY: `addr` is a live VNODE_SIZE arena block (vnodes are never freed
    // while the kernel runs) and `off` is 4-aligned inside it.
    unsafe { &*((addr + off) as *const AtomicI32) }
}

/// Atomic view of a pointer-sized word.
pub fn word(addr: usize) -> &'static AtomicUsize {
    // SAFETY: callers pass 8-aligned addresses of live kernel memory (vnode
    // blocks, vectors) that outlive the kernel's use of them.
    unsafe { &*(addr as *const AtomicUsize) }
}

impl Vnode {
    /// `v_usecount`.
    pub fn usecount(&self) -> i32 {
        field_i32(self.addr, V_USECOUNT).load(Ordering::Relaxed)
    }
    /// `v_kusecount`.
    pub fn kusecount(&self) -> i32 {
        field_i32(self.addr, V_KUSECOUNT).load(Ordering::Relaxed)
    }
    /// `v_iocount`.
    pub fn iocount(&self) -> i32 {
        field_i32(self.addr, V_IOCOUNT).load(Ordering::Relaxed)
    }
}

/// A mounted filesystem.
#[derive(Debug)]
pub struct Mount {
    /// Address of the `struct mount` block.
    pub addr: usize,
    /// Filesystem type name.
    pub fstype: String,
    /// Mount point.
    pub on: String,
    /// The VREG vector every vnode of this mount uses.
    pub vector: usize,
    /// Files: path → size.
    pub files: Mutex<BTreeMap<String, u64>>,
    /// Unmounted.
    pub gone: AtomicBool,
}

/// Mutable VFS state.
#[derive(Default)]
struct VfsState {
    fstypes: Vec<Arc<FsType>>,
    mounts: Vec<Arc<Mount>>,
    by_path: HashMap<String, Arc<Vnode>>,
    by_addr: HashMap<usize, Arc<Vnode>>,
    /// Reclaimed vnodes still referenced (open files of a forced unmount).
    dead: HashMap<usize, Arc<Vnode>>,
    free_blocks: Vec<(usize, u32)>,
}

/// The VFS.
pub struct Vfs {
    /// Descriptor offsets of this boot.
    pub offsets: VopOffsets,
    /// Offset of `v_op` in the vnode.
    pub v_op_offset: usize,
    /// Every vector the kernel knows, by address (written only through
    /// `vectors_mut`, which invalidates the per-thread lookup caches).
    vectors: RwLock<HashMap<usize, Arc<VectorInfo>>>,
    /// The deadfs vector reclaimed vnodes point to.
    pub dead_vector: usize,
    state: RwLock<VfsState>,
    /// Other kexts' vectors vfs_fsremove freed (poisoned, inaccessible),
    /// most recent last: the next one allocated reuses the most recent, as
    /// a zone's per-CPU cache hands back the element just freed.
    freed_vectors: Mutex<Vec<usize>>,
    /// Vectors of other kexts' filesystems, each alone on its page (so a
    /// freed one can be made inaccessible).
    guarded: Mutex<std::collections::HashSet<usize>>,
}

/// A word of poison, as a freed vector holds it.
const POISON_WORD: usize = usize::from_ne_bytes([crate::arena::POISON; 8]);

/// The filesystems every boot registers (name, PAGEINV2).
pub const BUILTIN_FS: &[(&str, bool)] = &[("apfs", true), ("hfs", false), ("devfs", false)];

impl Vfs {
    /// `vfs_op_init` plus the built-in filesystems.
    pub fn new(config: &Config, arena: &Arena) -> Vfs {
        let counts = config.counts_offset.unwrap_or(V_KUSECOUNT);
        let v_op = config.v_op_offset.unwrap_or(config.release.v_op_offset());
        assert!(
            counts % 4 == 0
                && counts + 12 <= VNODE_SIZE
                && (counts + 12 <= v_op || counts >= v_op + 8),
            "counts_offset {counts} must be 4-aligned, inside the vnode and clear of v_op"
        );
        COUNTS_BASE.store(counts, Ordering::Relaxed);
        let names = desc_names(config.release);
        let at = |n: &str| names.iter().position(|x| *x == n).unwrap_or(0);
        let offsets = VopOffsets {
            numops: names.len(),
            default: at("vnop_default"),
            mmap: at("vnop_mmap"),
            mnomap: at("vnop_mnomap"),
            pagein: at("vnop_pagein"),
            mmap_check: at("vnop_mmap_check"),
            reclaim: at("vnop_reclaim"),
            inactive: at("vnop_inactive"),
            close: at("vnop_close"),
        };
        set_desc(&raw mut vnop_default_desc, offsets.default);
        set_desc(&raw mut vnop_mmap_desc, offsets.mmap);
        set_desc(&raw mut vnop_mnomap_desc, offsets.mnomap);
        set_desc(&raw mut vnop_pagein_desc, offsets.pagein);
        set_desc(&raw mut vnop_mmap_check_desc, offsets.mmap_check);
        set_desc(&raw mut vnop_reclaim_desc, offsets.reclaim);
        set_desc(&raw mut vnop_inactive_desc, offsets.inactive);
        set_desc(&raw mut vnop_close_desc, offsets.close);
        let v_op_offset = config
            .v_op_offset
            .unwrap_or_else(|| config.release.v_op_offset());
        assert!(
            v_op_offset % 8 == 0 && (104..=VNODE_SIZE - 8).contains(&v_op_offset),
            "v_op offset {v_op_offset} is not a pointer slot after the counts"
        );
        let mut vfs = Vfs {
            offsets,
            v_op_offset,
            vectors: RwLock::new(HashMap::new()),
            dead_vector: 0,
            state: RwLock::new(VfsState::default()),
            freed_vectors: Mutex::new(Vec::new()),
            guarded: Mutex::new(std::collections::HashSet::new()),
        };
        vfs.dead_vector = vfs.kernel_vector(arena, "deadfs", true);
        for (name, v2) in BUILTIN_FS {
            let vector = vfs.kernel_vector(arena, name, false);
            let handle = arena
                .alloc(64, 16, false, Owner::Kernel, "vfstable")
                .unwrap_or(0);
            vfs.state_mut().fstypes.push(Arc::new(FsType {
                name: (*name).to_string(),
                handle,
                vectors: vec![vector],
                owner: Owner::Kernel,
                flags: if *v2 { xnu::VFS_TBLVNOP_PAGEINV2 } else { 0 },
                mounts: AtomicU32::new(0),
            }));
        }
        vfs
    }

    /// Builds a kernel filesystem's vector (heap memory, like vfs_fsadd).
    fn kernel_vector(&self, arena: &Arena, fs: &str, dead: bool) -> usize {
        let o = self.offsets;
        let default = vn_default_error as *const () as usize;
        let mut entries = vec![default; o.numops];
        if dead {
            for e in [o.mmap, o.mnomap, o.pagein, o.mmap_check] {
                entries[e] = dead_vnop_eio as *const () as usize;
            }
            entries[o.reclaim] = sim_vnop_ok as *const () as usize;
            // dead_nullop (bsd/miscfs/deadfs/dead_vnops.c, xnu-11417.121.6).
            entries[o.close] = sim_vnop_ok as *const () as usize;
        } else {
            entries[o.mmap] = sim_vnop_mmap as *const () as usize;
            entries[o.mnomap] = sim_vnop_mnomap as *const () as usize;
            entries[o.pagein] = sim_vnop_pagein as *const () as usize;
            entries[o.mmap_check] = sim_vnop_mmap_check as *const () as usize;
            entries[o.reclaim] = sim_vnop_ok as *const () as usize;
            entries[o.inactive] = sim_vnop_ok as *const () as usize;
            entries[o.close] = sim_vnop_close as *const () as usize;
        }
        let addr = arena
            .alloc(o.numops * 8, 16, true, Owner::Kernel, "vnode-op vector")
            .expect("kernel memory for a vector");
        for (i, e) in entries.iter().enumerate() {
            word(addr + i * 8).store(*e, Ordering::Relaxed);
        }
        self.vectors_mut().insert(
            addr,
            Arc::new(VectorInfo {
                originals: entries,
                owner: Owner::Kernel,
                fs: fs.to_string(),
                freed: false,
            }),
        );
        addr
    }

    // ------------------------------------------------------------ filesystems

    /// Registers a filesystem type built from kext-provided vectors.
    pub fn add_fstype(&self, fs: FsType, infos: Vec<(usize, VectorInfo)>) -> Result<(), i32> {
        let mut st = self.state_mut();
        if st.fstypes.iter().any(|f| f.name == fs.name) {
            return Err(errno::EEXIST);
        }
        let mut vectors = self.vectors_mut();
        for (addr, info) in infos {
            vectors.insert(addr, Arc::new(info));
        }
        st.fstypes.push(Arc::new(fs));
        Ok(())
    }

    /// Removes a filesystem type by handle (vfs_fsremove).
    pub fn remove_fstype(&self, handle: usize) -> Result<Arc<FsType>, i32> {
        let mut st = self.state_mut();
        let i = st
            .fstypes
            .iter()
            .position(|f| f.handle == handle)
            .ok_or(errno::EINVAL)?;
        if st.fstypes[i].mounts.load(Ordering::Relaxed) != 0 {
            return Err(errno::EBUSY);
        }
        let fs = st.fstypes.remove(i);
        let mut vectors = self.vectors_mut();
        let mut freed = lock(&self.freed_vectors);
        for v in &fs.vectors {
            if let Some(info) = vectors.get_mut(v) {
                Arc::make_mut(info).freed = true;
                // bsd/vfs/kpi_vfs.c vfs_fsremove (xnu-11417.121.6):
                // kfree_type(PFI, descsize, old_desc).
                for i in 0..self.offsets.numops {
                    word(v + i * 8).store(POISON_WORD, Ordering::Relaxed);
                }
                if lock(&self.guarded).contains(v) {
                    // Another kext's vector, alone on its page: reused later.
                    crate::guard::protect(*v);
                    freed.push(*v);
                }
            }
        }
        Ok(fs)
    }

    /// Whether `addr` is a vector vfs_fsremove freed (not reused since).
    pub fn is_freed_vector(&self, addr: usize) -> bool {
        self.vector_info(addr).is_some_and(|i| i.freed)
    }

    /// Registers a filesystem of another kext (`Sim::add_fs`): its vector
    /// reuses the one vfs_fsremove freed last, if any (checked untouched
    /// since: a write into freed memory is reported).
    pub fn add_other_fstype(&self, k: &Kernel, name: &str) -> Result<usize, i32> {
        if read(&self.state).fstypes.iter().any(|f| f.name == name) {
            return Err(errno::EEXIST);
        }
        let o = self.offsets;
        let reused = lock(&self.freed_vectors).pop();
        let addr = match reused {
            Some(a) => {
                crate::guard::unprotect(a);
                let written = (0..o.numops)
                    .filter(|i| word(a + i * 8).load(Ordering::Relaxed) != POISON_WORD)
                    .count();
                if written > 0 {
                    k.violation(Violation::Contract {
                        rule: "vfs_fsremove.vector_freed",
                        detail: format!(
                            "{written} entr(ies) of the vector at {a:#x} written after \
                             vfs_fsremove freed it"
                        ),
                    });
                }
                a
            }
            None => {
                let a = k
                    .arena
                    .alloc(
                        crate::guard::GUARD_PAGE,
                        crate::guard::GUARD_PAGE,
                        true,
                        Owner::Kernel,
                        "vnode-op vector",
                    )
                    .expect("kernel memory for a vector");
                lock(&self.guarded).insert(a);
                a
            }
        };
        let default = vn_default_error as *const () as usize;
        let mut entries = vec![default; o.numops];
        entries[o.mmap] = sim_vnop_mmap as *const () as usize;
        entries[o.mnomap] = sim_vnop_mnomap as *const () as usize;
        entries[o.pagein] = sim_vnop_pagein as *const () as usize;
        entries[o.mmap_check] = sim_vnop_mmap_check as *const () as usize;
        entries[o.reclaim] = sim_vnop_ok as *const () as usize;
        entries[o.inactive] = sim_vnop_ok as *const () as usize;
        entries[o.close] = sim_vnop_close as *const () as usize;
        for (i, e) in entries.iter().enumerate() {
            word(addr + i * 8).store(*e, Ordering::Relaxed);
        }
        let handle = k.kalloc(64, "vfstable");
        let info = VectorInfo {
            originals: entries,
            owner: Owner::Kernel,
            fs: name.to_string(),
            freed: false,
        };
        let fs = FsType {
            name: name.to_string(),
            handle,
            vectors: vec![addr],
            owner: Owner::Kernel,
            flags: 0,
            mounts: AtomicU32::new(0),
        };
        self.add_fstype(fs, vec![(addr, info)])?;
        Ok(addr)
    }

    /// The handle and vector of the filesystem type `name`.
    pub fn fstype(&self, name: &str) -> Option<(usize, usize)> {
        read(&self.state)
            .fstypes
            .iter()
            .find(|f| f.name == name)
            .map(|f| (f.handle, f.vectors.first().copied().unwrap_or(0)))
    }

    /// Every live vnode-op vector with its registered entries (address,
    /// info): tests compare the vectors' current words with the originals.
    pub fn live_vectors(&self) -> Vec<(usize, Arc<VectorInfo>)> {
        read(&self.vectors)
            .iter()
            .filter(|(_, info)| !info.freed)
            .map(|(addr, info)| (*addr, Arc::clone(info)))
            .collect()
    }

    /// Filesystem types registered by the kext.
    pub fn kext_fstypes(&self) -> Vec<String> {
        read(&self.state)
            .fstypes
            .iter()
            .filter(|f| f.owner == Owner::Kext)
            .map(|f| f.name.clone())
            .collect()
    }

    // ------------------------------------------------------------ mounts

    /// Mounts a filesystem of type `fstype` on `on`.
    pub fn mount(&self, k: &Kernel, fstype: &str, on: &str) -> Result<Arc<Mount>, i32> {
        let mut st = self.state_mut();
        let fs = st
            .fstypes
            .iter()
            .find(|f| f.name == fstype)
            .cloned()
            .ok_or(errno::ENOTSUP)?;
        if st.mounts.iter().any(|m| m.on == on) {
            return Err(errno::EBUSY);
        }
        let addr = k.kalloc(MOUNT_SIZE, "mount");
        let statfs = addr + MOUNT_STATFS_OFFSET;
        // SAFETY: `statfs` is inside the fresh mount block, suitably aligned for
        // the packed struct (alignment 4).
        unsafe { std::ptr::write_bytes(statfs as *mut u8, 0, size_of::<xnu::vfsstatfs>()) };
        copy_cstr(
            fstype,
            statfs + std::mem::offset_of!(xnu::vfsstatfs, f_fstypename),
            16,
        );
        copy_cstr(
            on,
            statfs + std::mem::offset_of!(xnu::vfsstatfs, f_mntonname),
            1024,
        );
        let bsize = (statfs + std::mem::offset_of!(xnu::vfsstatfs, f_bsize)) as *mut u32;
        // SAFETY: `bsize` is f_bsize of the zeroed vfsstatfs just written.
        unsafe { bsize.write_unaligned(k.config.page_size as u32) };
        fs.mounts.fetch_add(1, Ordering::Relaxed);
        let m = Arc::new(Mount {
            addr,
            fstype: fstype.to_string(),
            on: on.to_string(),
            vector: fs.vectors[0],
            files: Mutex::new(BTreeMap::new()),
            gone: AtomicBool::new(false),
        });
        st.mounts.push(Arc::clone(&m));
        Ok(m)
    }

    /// Live mounts, in mount order.
    pub fn mounts(&self) -> Vec<Arc<Mount>> {
        read(&self.state).mounts.clone()
    }

    /// The mount at `addr`.
    pub fn mount_by_addr(&self, addr: usize) -> Option<Arc<Mount>> {
        read(&self.state)
            .mounts
            .iter()
            .find(|m| m.addr == addr)
            .cloned()
    }

    /// The mount point `on`.
    pub fn mount_on(&self, on: &str) -> Option<Arc<Mount>> {
        read(&self.state)
            .mounts
            .iter()
            .find(|m| m.on == on)
            .cloned()
    }

    /// The mount a path lives on (longest prefix).
    pub fn mount_for(&self, path: &str) -> Option<Arc<Mount>> {
        read(&self.state)
            .mounts
            .iter()
            .filter(|m| under(path, &m.on))
            .max_by_key(|m| m.on.len())
            .cloned()
    }

    /// Detaches a mount (the caller has torn down its vnodes).
    pub fn detach_mount(&self, m: &Mount) {
        let mut st = self.state_mut();
        st.mounts.retain(|x| x.addr != m.addr);
        m.gone.store(true, Ordering::Relaxed);
        if let Some(fs) = st.fstypes.iter().find(|f| f.name == m.fstype) {
            fs.mounts.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds a file to the mount that covers `path`.
    pub fn add_file(&self, path: &str, size: u64) -> Result<(), i32> {
        let m = self.mount_for(path).ok_or(errno::ENOENT)?;
        lock(&m.files).insert(path.to_string(), size);
        Ok(())
    }

    // ------------------------------------------------------------ vnodes

    /// Looks a file up, instantiating its vnode on first use (namei). The
    /// vnode comes back with one iocount held.
    pub fn lookup(&self, k: &Kernel, path: &str) -> Result<Arc<Vnode>, i32> {
        loop {
            let vp = {
                let st = read(&self.state);
                st.by_path.get(path).cloned()
            };
            let vp = match vp {
                Some(vp) => vp,
                None => self.instantiate(k, path)?,
            };
            match self.get(&vp) {
                Ok(()) => return Ok(vp),
                // Reclaimed between lookup and get: look up again.
                Err(_) => continue,
            }
        }
    }

    fn instantiate(&self, k: &Kernel, path: &str) -> Result<Arc<Vnode>, i32> {
        let m = self.mount_for(path).ok_or(errno::ENOENT)?;
        let size = *lock(&m.files).get(path).ok_or(errno::ENOENT)?;
        let mut st = self.state_mut();
        if let Some(vp) = st.by_path.get(path) {
            return Ok(Arc::clone(vp));
        }
        let (addr, vid) = match st.free_blocks.pop() {
            Some(b) => b,
            None => (k.kalloc(VNODE_SIZE, "vnode"), 1),
        };
        let vp =
            Arc::new(self.init_vnode(addr, vid, xnu::VREG, m.addr, path, size, 0, m.vector, 0));
        st.by_path.insert(path.to_string(), Arc::clone(&vp));
        st.by_addr.insert(addr, Arc::clone(&vp));
        Ok(vp)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one constructor for every vnode field"
    )]
    fn init_vnode(
        &self,
        addr: usize,
        vid: u32,
        vtype: u32,
        mount: usize,
        path: &str,
        size: u64,
        fsnode: usize,
        vector: usize,
        iocount: i32,
    ) -> Vnode {
        // Everything but the counts and v_op stays poison, as an unknown
        // struct does to a kext.
        // SAFETY: `addr` is a VNODE_SIZE arena block owned by the VFS.
        unsafe { std::ptr::write_bytes(addr as *mut u8, crate::arena::POISON, VNODE_SIZE) };
        field_i32(addr, V_KUSECOUNT).store(0, Ordering::Relaxed);
        field_i32(addr, V_USECOUNT).store(0, Ordering::Relaxed);
        field_i32(addr, V_IOCOUNT).store(iocount, Ordering::Relaxed);
        word(addr + self.v_op_offset).store(vector, Ordering::Release);
        Vnode {
            addr,
            vid,
            vtype,
            mount,
            path: path.to_string(),
            size,
            fsnode,
            ubc: Mutex::new(Ubc::default()),
            ubc_cv: Condvar::new(),
            pages: Mutex::new(BTreeSet::new()),
            vm_object: Mutex::new(crate::vm::VmObject::default()),
            dead: AtomicBool::new(false),
            recycle_pending: AtomicBool::new(false),
            freed: AtomicBool::new(false),
            kext_iocounts: AtomicI32::new(0),
            kext_refs: AtomicI32::new(0),
        }
    }

    /// vnode_create: a vnode with the caller's vector and one iocount.
    pub fn create_vnode(&self, k: &Kernel, p: &xnu::vnode_fsparam) -> Arc<Vnode> {
        let mut st = self.state_mut();
        let (addr, vid) = match st.free_blocks.pop() {
            Some(b) => b,
            None => (k.kalloc(VNODE_SIZE, "vnode"), 1),
        };
        let vector = p.vnfs_vops as usize;
        let path = format!("<kext vnode {addr:#x}>");
        let vp = Arc::new(self.init_vnode(
            addr,
            vid,
            p.vnfs_vtype,
            p.vnfs_mp as usize,
            &path,
            p.vnfs_filesize.max(0) as u64,
            p.vnfs_fsnode as usize,
            vector,
            1,
        ));
        st.by_addr.insert(addr, Arc::clone(&vp));
        vp
    }

    /// The state, write-locked, with the lookup caches invalidated.
    fn state_mut(&self) -> RwLockWriteGuard<'_, VfsState> {
        write_invalidating(&self.state)
    }

    /// The vector table, write-locked, with the lookup caches invalidated.
    fn vectors_mut(&self) -> RwLockWriteGuard<'_, HashMap<usize, Arc<VectorInfo>>> {
        write_invalidating(&self.vectors)
    }

    /// The identity at `addr`: live, or dead but still referenced.
    pub fn vnode(&self, addr: usize) -> Option<Arc<Vnode>> {
        cached_lookup(&VNODE_CACHE, &self.state, addr, |st| {
            st.by_addr
                .get(&addr)
                .or_else(|| st.dead.get(&addr))
                .cloned()
        })
    }

    /// What the kernel knows of the vector at `addr`.
    fn vector_info(&self, addr: usize) -> Option<Arc<VectorInfo>> {
        cached_lookup(&VECTOR_CACHE, &self.vectors, addr, |v| {
            v.get(&addr).cloned()
        })
    }

    /// The vnode of `path`, if instantiated.
    pub fn vnode_by_path(&self, path: &str) -> Option<Arc<Vnode>> {
        read(&self.state).by_path.get(path).cloned()
    }

    /// Instantiated vnodes of a mount (0: vnodes without a mount).
    pub fn vnodes_of(&self, mount: usize) -> Vec<Arc<Vnode>> {
        let st = read(&self.state);
        let mut v: Vec<Arc<Vnode>> = st
            .by_addr
            .values()
            .filter(|v| v.mount == mount)
            .cloned()
            .collect();
        v.sort_by_key(|v| v.addr);
        v
    }

    /// Every live vnode.
    pub fn all_vnodes(&self) -> Vec<Arc<Vnode>> {
        let st = read(&self.state);
        let mut v: Vec<Arc<Vnode>> = st.by_addr.values().cloned().collect();
        v.sort_by_key(|v| v.addr);
        v
    }

    /// `vp->v_op`.
    pub fn v_op(&self, vp: &Vnode) -> usize {
        word(vp.addr + self.v_op_offset).load(Ordering::Acquire)
    }

    // ------------------------------------------------------------ counts

    /// vnode_getwithref: +1 iocount unless the vnode is dead.
    pub fn get(&self, vp: &Vnode) -> Result<(), i32> {
        if vp.dead.load(Ordering::Acquire) {
            return Err(errno::ENOENT);
        }
        field_i32(vp.addr, V_IOCOUNT).fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// vnode_put: -1 iocount; reclaims a vnode marked for recycling once it
    /// is unused.
    pub fn put(&self, k: &Kernel, vp: &Arc<Vnode>) {
        let prev = field_i32(vp.addr, V_IOCOUNT).fetch_sub(1, Ordering::AcqRel);
        if prev < 1 {
            field_i32(vp.addr, V_IOCOUNT).fetch_add(1, Ordering::AcqRel);
            k.violation(Violation::UnbalancedCount(format!(
                "vnode_put({:#x} {}): iocount < 1",
                vp.addr, vp.path
            )));
            return;
        }
        if prev == 1 && vp.usecount() == 0 {
            self.inactive(k, vp);
        }
    }

    /// The last reference went: reclaim if recycling was asked for, and give
    /// a dead vnode's block back.
    fn inactive(&self, k: &Kernel, vp: &Arc<Vnode>) {
        if vp.recycle_pending.load(Ordering::Acquire) {
            self.reclaim(k, vp);
        }
        self.maybe_free(vp);
    }

    /// Returns a dead, unreferenced vnode's block to the free list once.
    fn maybe_free(&self, vp: &Arc<Vnode>) {
        if vp.dead.load(Ordering::Acquire)
            && vp.usecount() == 0
            && vp.iocount() == 0
            && !vp.freed.swap(true, Ordering::AcqRel)
        {
            let mut st = self.state_mut();
            st.dead.remove(&vp.addr);
            st.free_blocks.push((vp.addr, vp.vid.wrapping_add(1)));
        }
    }

    /// vnode_ref: +1 usecount.
    pub fn vref(&self, vp: &Vnode) {
        field_i32(vp.addr, V_USECOUNT).fetch_add(1, Ordering::AcqRel);
    }

    /// The O_EVTONLY half of vnode_ref_ext/vnode_rele_ext: v_kusecount moves
    /// with v_usecount for event-only opens (bsd/vfs/vfs_subr.c,
    /// xnu-11417.121.6), so vnode_isinuse does not count them.
    pub fn kusecount_add(&self, vp: &Vnode, delta: i32) {
        field_i32(vp.addr, V_KUSECOUNT).fetch_add(delta, Ordering::AcqRel);
    }

    /// vnode_rele: -1 usecount.
    pub fn rele(&self, k: &Kernel, vp: &Arc<Vnode>) {
        let prev = field_i32(vp.addr, V_USECOUNT).fetch_sub(1, Ordering::AcqRel);
        if prev < 1 {
            field_i32(vp.addr, V_USECOUNT).fetch_add(1, Ordering::AcqRel);
            k.violation(Violation::UnbalancedCount(format!(
                "vnode_rele({:#x} {}): usecount -ve",
                vp.addr, vp.path
            )));
            return;
        }
        if prev == 1 && vp.iocount() == 0 {
            self.inactive(k, vp);
        }
    }

    /// Reclaims a vnode (vclean): VNOP_RECLAIM through its vector, then the
    /// vnode is deadfs; its block returns to the free list (vid + 1) once the
    /// last reference is gone.
    pub fn reclaim(&self, k: &Kernel, vp: &Arc<Vnode>) {
        if vp.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut args = xnu::vnop_reclaim_args {
            a_desc: desc_addr(Vop::Reclaim) as *mut xnu::vnodeop_desc,
            a_vp: vp.addr as xnu::vnode_t,
            a_context: std::ptr::null_mut(),
        };
        let err = self.dispatch(k, vp, Vop::Reclaim, (&raw mut args).cast());
        if err != 0 {
            k.violation(Violation::KernelPanic(format!(
                "vclean: cannot reclaim vnode {:#x} ({}): VNOP_RECLAIM returned {err}",
                vp.addr, vp.path
            )));
        }
        lock(&vp.pages).clear();
        word(vp.addr + self.v_op_offset).store(self.dead_vector, Ordering::Release);
        {
            let mut st = self.state_mut();
            if st.by_path.get(&vp.path).is_some_and(|x| Arc::ptr_eq(x, vp)) {
                st.by_path.remove(&vp.path);
            }
            if st.by_addr.get(&vp.addr).is_some_and(|x| Arc::ptr_eq(x, vp)) {
                st.by_addr.remove(&vp.addr);
            }
            st.dead.insert(vp.addr, Arc::clone(vp));
        }
        self.maybe_free(vp);
    }

    // ------------------------------------------------------------ dispatch

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
            k.kext_call(Frame::VnopHook(op), || call_vnop(entry, args))
        } else {
            call_vnop(entry, args)
        }
    }
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

/// Whether `path` is `dir` or below it.
pub fn under(path: &str, dir: &str) -> bool {
    dir == "/" && path.starts_with('/')
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Copies `s` NUL-terminated into `len` bytes at `dst`.
pub fn copy_cstr(s: &str, dst: usize, len: usize) {
    let n = s.len().min(len.saturating_sub(1));
    // SAFETY: `dst` has room for `len` bytes (a field of a kernel object).
    unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), dst as *mut u8, n) };
    // SAFETY: `n < len`, inside the same field.
    unsafe { *((dst + n) as *mut u8) = 0 };
}

// ---------------------------------------------------------------- originals

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
    let ps = k.config.page_size;
    let first = off as u64 / ps;
    let last = (off as u64 + size.max(1) - 1) / ps;
    let mut pages = lock(&vp.pages);
    // A re-read of cached pages (one search) inserts nothing.
    if pages.range(first..=last).count() as u64 != last - first + 1 {
        pages.extend(first..=last);
    }
    drop(pages);
    trace_vnop(k, &vp, TraceOp::Pagein, off, size, a.a_flags);
    0
}

/// VNOP_RECLAIM / VNOP_INACTIVE of the simulated filesystems.
extern "C" fn sim_vnop_ok(_args: *mut c_void) -> c_int {
    0
}

/// deadfs: every operation on a reclaimed vnode fails.
extern "C" fn dead_vnop_eio(_args: *mut c_void) -> c_int {
    errno::EIO
}
