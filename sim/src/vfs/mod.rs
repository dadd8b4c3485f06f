//! VFS: vnode-op descriptors and vectors, filesystems, mounts and vnodes laid
//! out like XNU's, and the dispatch `(*vp->v_op[desc.vdesc_offset])(&args)`.
//!
//! This file holds the layouts, the types and the tables with their lookup
//! caches. Each room adds one job: `desc` (descriptors), `fs` (filesystem
//! types and vectors), `mount`, `vnode`, `counts`, `dispatch` and
//! `originals` (the filesystems' own operations). Rooms use this file and
//! `desc`/`originals`, never each other otherwise.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockWriteGuard};
use std::thread::LocalKey;

use crate::arena::Owner;
use crate::{read, write};

mod counts;
mod desc;
mod dispatch;
mod fs;
mod mount;
mod originals;
mod vnode;

pub use desc::{VopOffsets, default_desc_addr, desc_addr};
pub(crate) use dispatch::call_entry;
pub use mount::under;

/// Generation of every VFS's vnode and vector tables: bumped under the write
/// lock before any change, so a per-thread lookup cache filled under the read
/// lock at generation `g` is exact while the generation is still `g`.
static LOOKUP_GEN: AtomicU64 = AtomicU64::new(0);

/// The lookup generation now: an answer read from the tables at (or after)
/// this generation is still exact while it is unchanged.
#[inline(always)]
pub fn lookup_generation() -> u64 {
    LOOKUP_GEN.load(Ordering::Acquire)
}

/// One thread's last lookup in a VFS table.
struct Cached<T> {
    table: usize,
    generation: u64,
    addr: usize,
    value: Found<T>,
}

/// What a table lookup hands out: the table's `Arc`, behind a thread-local
/// `Rc` so a cache hit bumps no shared reference count (one vector's `Arc`
/// is read by every CPU dispatching through it; XNU reads a field).
pub type Found<T> = Rc<Arc<T>>;

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
) -> Option<Found<T>> {
    let key = std::ptr::from_ref(table) as usize;
    let generation = LOOKUP_GEN.load(Ordering::Acquire);
    let hit = cache.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|e| e.table == key && e.addr == addr && e.generation == generation)
            .map(|e| Rc::clone(&e.value))
    });
    if hit.is_some() {
        return hit;
    }
    let (generation, found) = {
        let t = read(table);
        // Read under the lock: no change is under way.
        (LOOKUP_GEN.load(Ordering::Acquire), find(&t).map(Rc::new))
    };
    if let Some(value) = &found {
        let entry = Cached {
            table: key,
            generation,
            addr,
            value: Rc::clone(value),
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
    /// A stacking filesystem's vnode: the vnode it forwards to, on which it
    /// holds a usecount until reclaimed.
    pub lower: Option<Arc<Vnode>>,
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
    /// A stacking filesystem's mount: the directory it mirrors.
    pub lower: Option<String>,
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
    /// Names of the filesystem types other kexts added, in first-add
    /// order: a name added again is the same kext's code again.
    kext_fs_names: Mutex<Vec<String>>,
    /// Vectors of other kexts' filesystems, each alone on its page (so a
    /// freed one can be made inaccessible).
    guarded: Mutex<std::collections::HashSet<usize>>,
}

/// The tables, read through the per-thread lookup caches and written
/// with them invalidated.
impl Vfs {
    /// The state, write-locked, with the lookup caches invalidated.
    fn state_mut(&self) -> RwLockWriteGuard<'_, VfsState> {
        write_invalidating(&self.state)
    }

    /// The vector table, write-locked, with the lookup caches invalidated.
    fn vectors_mut(&self) -> RwLockWriteGuard<'_, HashMap<usize, Arc<VectorInfo>>> {
        write_invalidating(&self.vectors)
    }

    /// The identity at `addr`: live, or dead but still referenced.
    pub fn vnode(&self, addr: usize) -> Option<Found<Vnode>> {
        cached_lookup(&VNODE_CACHE, &self.state, addr, |st| {
            st.by_addr
                .get(&addr)
                .or_else(|| st.dead.get(&addr))
                .cloned()
        })
    }

    /// What the kernel knows of the vector at `addr`.
    fn vector_info(&self, addr: usize) -> Option<Found<VectorInfo>> {
        cached_lookup(&VECTOR_CACHE, &self.vectors, addr, |v| {
            v.get(&addr).cloned()
        })
    }
}

/// A word of poison, as a freed vector holds it.
const POISON_WORD: usize = usize::from_ne_bytes([crate::arena::POISON; 8]);

/// The filesystems every boot registers (name, PAGEINV2).
pub const BUILTIN_FS: &[(&str, bool)] = &[("apfs", true), ("hfs", false), ("devfs", false)];

/// The stacking filesystems every boot registers (bsd/vfs/vfs_conf.c
/// `vfstbllist`, xnu-11417.121.6; nullfs since xnu-6153, bindfs since
/// xnu-7195): a mount mirrors a directory of another mount, and their
/// vnodes forward VNOP_MMAP, VNOP_MNOMAP and VNOP_CLOSE to the lower vnode.
pub const STACKING_FS: &[&str] = &["nullfs", "bindfs"];

/// Copies `s` NUL-terminated into `len` bytes at `dst`.
pub fn copy_cstr(s: &str, dst: usize, len: usize) {
    let n = s.len().min(len.saturating_sub(1));
    // SAFETY: `dst` has room for `len` bytes (a field of a kernel object).
    unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), dst as *mut u8, n) };
    // SAFETY: `n < len`, inside the same field.
    unsafe { *((dst + n) as *mut u8) = 0 };
}
