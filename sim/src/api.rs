//! The user-space API tests and the companion drive the simulator with.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

use crate::arena::Owner;
use crate::kernel::{Config, Kernel, TraceEvent};
use crate::kext::KextError;
use crate::sysctl::SysctlError;
use crate::vfs::Vnode;
use crate::violation::{Violation, ViolationPolicy};
use crate::vm::{self, Mapping, Process, TouchStats};
use crate::{Vop, lock, xnu};

/// Whether the real shim (`kext-shim/src/*.c`) is compiled into this build.
pub const SHIM_LINKED: bool = cfg!(mt_shim);
/// Whether the shim is its kauth build variant (`MT_WITH_KAUTH`, feature `kauth`).
pub const SHIM_WITH_KAUTH: bool = cfg!(feature = "kauth");
/// Whether the shim is its resident build variant (`MT_RESIDENT`, feature `resident`).
pub const SHIM_RESIDENT: bool = cfg!(feature = "resident");

#[cfg(mt_shim)]
unsafe extern "C" {
    /// The shim's kmod_info (KMOD_EXPLICIT_DECL in kext-shim/src/mt_main.c).
    static mut kmod_info: xnu::kmod_info;
    /// The shim's ring tunables (kext-shim/src/mt_main.c), read at start.
    static mut mt_tunable_nshards: u32;
    static mut mt_tunable_slots_per_shard: u32;
}

/// One simulator at a time per process: the kext's globals and the exported
/// descriptors are process-wide, as in a kernel. A flag and a condvar rather
/// than a guard, so a `Sim` can move between threads.
static BOOTED: Mutex<bool> = Mutex::new(false);
static BOOT_CV: Condvar = Condvar::new();

/// Holds the process's one boot slot; releases it on drop.
struct BootSlot;

impl BootSlot {
    fn take() -> BootSlot {
        let mut booted = lock(&BOOTED);
        while *booted {
            booted = BOOT_CV.wait(booted).unwrap_or_else(|e| e.into_inner());
        }
        *booted = true;
        BootSlot
    }
}

impl Drop for BootSlot {
    fn drop(&mut self) {
        *lock(&BOOTED) = false;
        BOOT_CV.notify_one();
    }
}

/// An errno from a simulated system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimError(pub i32);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errno {}", self.0)
    }
}

impl std::error::Error for SimError {}

/// Credentials a sysctl request is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cred {
    /// uid 0.
    Root,
    /// Any other uid.
    User(u32),
}

impl Cred {
    fn uid(self) -> u32 {
        match self {
            Cred::Root => 0,
            Cred::User(u) => u,
        }
    }
}

/// A vnode's counts as the kernel holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VnodeCounts {
    /// `v_usecount`.
    pub usecount: i32,
    /// `v_kusecount`.
    pub kusecount: i32,
    /// `v_iocount`.
    pub iocount: i32,
    /// `v_id`.
    pub vid: u32,
    /// UI_ISMAPPED.
    pub mapped: bool,
}

/// A booted simulated kernel. Dropping it shuts the kernel down (and, with
/// the `Panic` policy, fails on violations nobody collected). `Send` and
/// `Sync`: share `&Sim` with the threads that drive processes.
pub struct Sim {
    k: Arc<Kernel>,
    _boot: BootSlot,
}

/// A simulated process. Each call runs on the calling OS thread as a thread
/// of this process, so processes driven from several threads really run
/// concurrently.
#[derive(Clone)]
pub struct Proc {
    k: Arc<Kernel>,
    p: Arc<Process>,
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc")
            .field("pid", &self.p.pid)
            .field("name", &self.name())
            .finish()
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("boot", &self.k.boot)
            .field("release", &self.k.config.release)
            .finish()
    }
}

fn res<T>(r: Result<T, i32>) -> Result<T, SimError> {
    r.map_err(SimError)
}

impl Sim {
    /// Boots a kernel: assigns descriptor offsets, registers the built-in
    /// filesystems (apfs, hfs, devfs) and creates kernel_task.
    pub fn boot(config: Config) -> Sim {
        let slot = BootSlot::take();
        let k = Kernel::boot(config);
        crate::foreign::reset();
        Sim { k, _boot: slot }
    }

    /// The kernel, for modules that need more than this API.
    pub fn kernel(&self) -> &Arc<Kernel> {
        &self.k
    }

    /// Boot parameters.
    pub fn config(&self) -> &Config {
        &self.k.config
    }

    /// Mounts a filesystem type (`apfs`, `hfs`, `devfs`, or one a kext added).
    pub fn mount(&self, fstype: &str, on: &str) -> Result<(), SimError> {
        res(self.k.vfs.mount(&self.k, fstype, on).map(|_| ()))
    }

    /// Mounts a stacking filesystem (`nullfs`, `bindfs`) on `on`, mirroring
    /// the directory `lower` of another mount (`mount -t nullfs lower on`):
    /// its vnodes forward VNOP_MMAP, VNOP_MNOMAP and VNOP_CLOSE to the lower
    /// vnodes, and its page-ins read the lower files.
    pub fn mount_over(&self, fstype: &str, lower: &str, on: &str) -> Result<(), SimError> {
        res(self
            .k
            .vfs
            .mount_stacked(&self.k, fstype, lower, on)
            .map(|_| ()))
    }

    /// Creates a regular file of `size` bytes on the mount covering `path`.
    pub fn add_file(&self, path: &str, size: u64) -> Result<(), SimError> {
        res(self.k.vfs.add_file(path, size))
    }

    /// Unmounts as `diskarbitrationd` (uid 0, started on first use), the
    /// usual caller of unmount(2) for an eject; `force` tears down mappings
    /// of files in use (vclean) in its thread. [`Proc::unmount`] names
    /// another caller.
    pub fn unmount(&self, on: &str, force: bool) -> Result<(), SimError> {
        let da = self.diskarbitrationd();
        let r = res(self.k.sys_unmount(&da, on, force));
        self.k.safe_point();
        r
    }

    /// The modelled diskarbitrationd.
    fn diskarbitrationd(&self) -> Arc<crate::vm::Process> {
        let name = "diskarbitrationd";
        self.k
            .procs
            .all()
            .into_iter()
            .find(|p| {
                p.uid == 0
                    && *lock(&p.name) == name
                    && !p.exited.load(std::sync::atomic::Ordering::Acquire)
            })
            .unwrap_or_else(|| self.k.procs.create(&self.k, name, 0, None))
    }

    /// Kills `p` as jetsam does: its teardown runs in the memorystatus
    /// kernel thread (pid 0). ESRCH if it already exited.
    pub fn jetsam(&self, p: &Proc) -> Result<(), SimError> {
        let r = res(self.k.sys_jetsam(&p.p));
        self.k.safe_point();
        r
    }

    /// Unmounts without asking the MAC policies, as `vfs_unmountbyfsid`
    /// (a KPI a filesystem kext may call) and submount unmounts do.
    pub fn unmount_unchecked(&self, on: &str, force: bool) -> Result<(), SimError> {
        let r = res(self.k.unmount_unchecked(on, force));
        self.k.safe_point();
        r
    }

    /// Another kext registers a filesystem type `name` (vfs_fsadd): its
    /// vector reuses the address of the vector vfs_fsremove freed last, if
    /// any. Returns the vector's address.
    pub fn add_fs(&self, name: &str) -> Result<usize, SimError> {
        res(self.k.vfs.add_other_fstype(&self.k, name))
    }

    /// That kext removes its filesystem type (vfs_fsremove): EBUSY while
    /// mounted; otherwise the vector is freed (poisoned).
    pub fn remove_fs(&self, name: &str) -> Result<(), SimError> {
        let (handle, _) = self
            .k
            .vfs
            .fstype(name)
            .ok_or(SimError(crate::vfs::errno::EINVAL))?;
        res(self.k.vfs.remove_fstype(handle).map(|_| ()))
    }

    /// Recycles an unused vnode now (its block gets vid + 1 and later a new
    /// file); for a vnode in use, on its last release. Returns whether it
    /// was reclaimed now.
    pub fn recycle(&self, path: &str) -> Result<bool, SimError> {
        let vp = self
            .k
            .vfs
            .vnode_by_path(path)
            .ok_or(SimError(crate::vfs::errno::ENOENT))?;
        vp.recycle_pending
            .store(true, std::sync::atomic::Ordering::Release);
        if vp.usecount() == 0 && vp.iocount() == 0 {
            self.k.vfs.reclaim(&self.k, &vp);
            self.k.safe_point();
            return Ok(true);
        }
        Ok(false)
    }

    /// Memory pressure: drops every cached page of the file, so the next
    /// touches page in again. Returns how many pages went.
    pub fn evict(&self, path: &str) -> Result<usize, SimError> {
        let vp = self
            .k
            .vfs
            .vnode_by_path(path)
            .ok_or(SimError(crate::vfs::errno::ENOENT))?;
        let mut pages = lock(&vp.pages);
        let n = pages.len();
        pages.clear();
        Ok(n)
    }

    /// Creates a process (pid from 100 up).
    pub fn spawn(&self, name: &str, uid: u32) -> Proc {
        Proc {
            k: Arc::clone(&self.k),
            p: self.k.procs.create(&self.k, name, uid, None),
        }
    }

    /// The process with `pid`.
    pub fn proc(&self, pid: i32) -> Option<Proc> {
        self.k.procs.get(pid).map(|p| Proc {
            k: Arc::clone(&self.k),
            p,
        })
    }

    /// Loads a kext from its `kmod_info` (runs its start routine).
    ///
    /// # Safety
    /// `ki` must point to a valid `kmod_info_t` whose start and stop routines
    /// follow the kmod contract, and stay valid while the kext is loaded.
    pub unsafe fn load_kext(&self, ki: *mut xnu::kmod_info) -> Result<(), KextError> {
        if !ki.is_null() {
            // SAFETY: the caller's kmod_info, readable per `load`'s contract.
            let info = unsafe { &*ki };
            let (start, stop) = (info.start, info.stop);
            self.k.kext_image.note(ki as usize);
            self.k.kext_image.note(start.map_or(0, |f| f as usize));
            self.k.kext_image.note(stop.map_or(0, |f| f as usize));
        }
        // SAFETY: the caller upholds `load`'s contract (see above).
        let r = unsafe { self.k.kext.load(&self.k, ki) };
        self.k.safe_point();
        r
    }

    /// Loads the real shim through its `kmod_info`, with whatever tunables
    /// its globals hold. `KextError::NotLinked` when the shim is not built in.
    pub fn load_shim(&self) -> Result<(), KextError> {
        #[cfg(mt_shim)]
        {
            let ki = &raw mut kmod_info;
            // SAFETY: the shim's kmod_info is a static that lives for the
            // process, and its start/stop follow the kmod contract.
            unsafe { self.load_kext(ki) }
        }
        #[cfg(not(mt_shim))]
        {
            Err(KextError::NotLinked)
        }
    }

    /// Loads the real shim as [`Sim::load_shim`] does, with its ring sized
    /// `ring` for this load (the shim reads its tunables once, in start);
    /// the tunables are put back afterwards, so a later load gets what the
    /// globals held before.
    pub fn load_shim_with_ring(&self, ring: crate::RingSize) -> Result<(), KextError> {
        #[cfg(mt_shim)]
        {
            // SAFETY: the shim reads these globals only in its start routine,
            // and this thread holds the process's one simulator (its boot
            // lock), so no other load runs meanwhile (so for each below).
            let shards = unsafe { mt_tunable_nshards };
            // SAFETY: as above.
            let slots = unsafe { mt_tunable_slots_per_shard };
            // SAFETY: as above.
            unsafe { mt_tunable_nshards = ring.shards };
            // SAFETY: as above.
            unsafe { mt_tunable_slots_per_shard = ring.slots };
            let r = self.load_shim();
            // SAFETY: as above; start has returned.
            unsafe { mt_tunable_nshards = shards };
            // SAFETY: as above.
            unsafe { mt_tunable_slots_per_shard = slots };
            r
        }
        #[cfg(not(mt_shim))]
        {
            let _ = ring;
            Err(KextError::NotLinked)
        }
    }

    /// Unloads the kext (runs stop; a refusal keeps it loaded), then checks
    /// what it left behind.
    pub fn unload_kext(&self) -> Result<(), KextError> {
        let r = self.k.kext.unload(&self.k);
        self.k.safe_point();
        r
    }

    /// Whether a kext is loaded.
    pub fn kext_loaded(&self) -> bool {
        self.k.kext.is_loaded()
    }

    fn sysctl_proc(&self, cred: Cred) -> Arc<Process> {
        let uid = cred.uid();
        let existing = self
            .k
            .procs
            .all()
            .into_iter()
            .find(|p| p.uid == uid && *lock(&p.name) == "sysctl");
        existing.unwrap_or_else(|| self.k.procs.create(&self.k, "sysctl", uid, None))
    }

    /// `sysctlbyname(name, old, &oldlen, NULL, 0)`: with `old == None` it is a
    /// size query. Returns the length the kernel reports; on error the
    /// `SysctlError` carries it too (a short buffer gives ENOMEM after a
    /// partial copy).
    pub fn sysctl_read(
        &self,
        name: &str,
        old: Option<&mut [u8]>,
        cred: Cred,
    ) -> Result<usize, SysctlError> {
        let p = self.sysctl_proc(cred);
        let r = self.k.sysctl.request(&self.k, &p, name, old, None);
        self.k.safe_point();
        r
    }

    /// `sysctlbyname(name, old, &oldlen, new, newlen)`.
    pub fn sysctl_write(
        &self,
        name: &str,
        new: &[u8],
        old: Option<&mut [u8]>,
        cred: Cred,
    ) -> Result<usize, SysctlError> {
        let p = self.sysctl_proc(cred);
        let r = self.k.sysctl.request(&self.k, &p, name, old, Some(new));
        self.k.safe_point();
        r
    }

    /// Registered sysctl names below `kern`.
    pub fn sysctl_names(&self) -> Vec<String> {
        self.k.sysctl.names()
    }

    /// Makes the next `n` copyouts fail with EFAULT.
    pub fn inject_copyout_faults(&self, n: u32) {
        self.k
            .copyout_faults
            .store(n, std::sync::atomic::Ordering::Release);
    }

    /// From now on, every copyout waits before it copies (a user page being
    /// faulted in) until the returned hold is released: a sysctl handler in
    /// SYSCTL_OUT stays running. An injected fault is taken after the wait.
    pub fn hold_copyout(&self) -> crate::hold::CopyoutHold {
        crate::hold::hold_copyout()
    }

    /// Counts of the file's vnode (None if never looked up or reclaimed).
    pub fn counts(&self, path: &str) -> Option<VnodeCounts> {
        let vp = self.k.vfs.vnode_by_path(path)?;
        let mapped = lock(&vp.ubc).ismapped;
        Some(VnodeCounts {
            usecount: vp.usecount(),
            kusecount: vp.kusecount(),
            iocount: vp.iocount(),
            vid: vp.vid,
            mapped,
        })
    }

    /// Kernel address of the file's vnode.
    pub fn vnode_addr(&self, path: &str) -> Option<u64> {
        self.k.vfs.vnode_by_path(path).map(|v| v.addr as u64)
    }

    /// Offset of `v_op` in this boot's vnode layout.
    pub fn v_op_offset(&self) -> usize {
        self.k.vfs.v_op_offset
    }

    /// Kext allocations still live: (count, bytes).
    pub fn allocations_outstanding(&self) -> (usize, usize) {
        self.k.arena.outstanding(Owner::Kext)
    }

    /// IOLog lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.k.log_lines()
    }

    /// What reached the filesystems, in order (the ground truth).
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.k.trace_events()
    }

    /// Where kernel objects live: any of these bytes in user-visible output
    /// is a leaked kernel address.
    pub fn kernel_address_ranges(&self) -> Vec<Range<u64>> {
        let mut v = vec![self.k.arena.range()];
        v.extend(self.kext_address_ranges());
        v
    }

    /// The kext's own text and globals (the mappings holding the pointers it
    /// handed the kernel) and the stacks its code ran on: kernel addresses
    /// outside the arena.
    pub fn kext_address_ranges(&self) -> Vec<Range<u64>> {
        self.k.kext_image.ranges()
    }

    /// Whether `v` is a kernel address (arena, kext image or kext stack).
    pub fn is_kernel_address(&self, v: u64) -> bool {
        self.k.arena.contains(v) || self.kext_address_ranges().iter().any(|r| r.contains(&v))
    }

    /// Every kernel address ([`Sim::kernel_address_ranges`]) in `bytes`, as
    /// 8 little-endian bytes, hex or decimal digits.
    pub fn find_kernel_address_leaks(&self, bytes: &[u8]) -> Vec<crate::arena::Leak> {
        let ranges = self.kernel_address_ranges();
        crate::arena::find_addresses(bytes, |v| ranges.iter().any(|r| r.contains(&v)))
    }

    /// Scans `bytes` for any aligned or unaligned little-endian u64 that is a
    /// kernel address; returns the offsets.
    pub fn find_kernel_addresses(&self, bytes: &[u8]) -> Vec<usize> {
        let ranges = self.kernel_address_ranges();
        bytes
            .windows(8)
            .enumerate()
            .filter(|(_, w)| {
                let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
                ranges.iter().any(|r| r.contains(&v))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Sets the violation policy.
    pub fn set_violation_policy(&self, p: ViolationPolicy) {
        self.k.set_policy(p);
    }

    /// Takes the violations recorded so far.
    pub fn take_violations(&self) -> Vec<Violation> {
        self.k.take_violations()
    }

    /// Checks every vnode's counts against the kernel's own bookkeeping
    /// (open files, mapped epochs, text references, kext references) and
    /// that no iocount is held. Call when no operation is running.
    pub fn check_balanced(&self) -> Result<(), Vec<Violation>> {
        let mut bad = Vec::new();
        let procs = self.k.procs.all();
        let vnodes = self.k.vfs.all_vnodes();
        for vp in &vnodes {
            let vp = Arc::clone(vp);
            let fgs: std::collections::HashSet<usize> =
                procs.iter().flat_map(|p| p.opens_of(&vp)).collect();
            let opens = fgs.len() as i32;
            let texts = procs.iter().filter(|p| p.text_is(&vp)).count() as i32;
            let mapped = i32::from(lock(&vp.ubc).ismapped);
            // What a loaded kext holds is its business; after unload, nothing.
            let loaded = self.k.kext.is_loaded();
            let kext = if loaded {
                vp.kext_refs.load(std::sync::atomic::Ordering::Acquire)
            } else {
                0
            };
            // A stacking filesystem's vnodes hold their lower one.
            let uppers = vnodes
                .iter()
                .filter(|u| u.lower.as_ref().is_some_and(|l| Arc::ptr_eq(l, &vp)))
                .count() as i32;
            let expected = opens + texts + mapped + kext + uppers;
            let kext_io = if loaded {
                vp.kext_iocounts.load(std::sync::atomic::Ordering::Acquire)
            } else {
                0
            };
            if vp.usecount() != expected {
                bad.push(Violation::UnbalancedCount(format!(
                    "{}: usecount {} but {opens} open(s) + {texts} text + {mapped} mapping + {kext} kext ref(s) + {uppers} stacked vnode(s)",
                    vp.path,
                    vp.usecount()
                )));
            }
            if vp.iocount() != kext_io {
                bad.push(Violation::UnbalancedCount(format!(
                    "{}: iocount {} with no operation running ({kext_io} held by the kext)",
                    vp.path,
                    vp.iocount()
                )));
            }
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }

    /// Runs pending violation checks now (panics under the `Panic` policy).
    pub fn safe_point(&self) {
        self.k.safe_point();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if self.k.kext.is_loaded() {
            // Best effort: a test that forgot to unload still gets its stop
            // routine run before the kernel goes away.
            let _ = self.k.kext.unload(&self.k);
        }
        self.k.shutdown();
        if !std::thread::panicking() {
            self.k.safe_point();
        }
    }
}

impl Proc {
    /// pid.
    pub fn pid(&self) -> i32 {
        self.p.pid
    }

    /// uid.
    pub fn uid(&self) -> u32 {
        self.p.uid
    }

    /// `p_comm`.
    pub fn name(&self) -> String {
        lock(&self.p.name).clone()
    }

    /// open(2) for reading; returns the descriptor.
    pub fn open(&self, path: &str) -> Result<i32, SimError> {
        let r = res(self.k.sys_open(&self.p, path));
        self.k.safe_point();
        r
    }

    /// open(2) with an access mode (`O_RDWR`, `O_EVTONLY`); returns the
    /// descriptor.
    pub fn open_mode(&self, path: &str, mode: crate::vm::OpenMode) -> Result<i32, SimError> {
        let r = res(self.k.sys_open_mode(&self.p, path, mode));
        self.k.safe_point();
        r
    }

    /// open(2) with O_EVTONLY (an FSEvents-style watcher): the reference is
    /// counted in v_usecount and v_kusecount both.
    pub fn open_evtonly(&self, path: &str) -> Result<i32, SimError> {
        self.open_mode(path, crate::vm::OpenMode::EvtOnly)
    }

    /// close(2).
    pub fn close(&self, fd: i32) -> Result<(), SimError> {
        let r = res(self.k.sys_close(&self.p, fd));
        self.k.safe_point();
        r
    }

    /// mmap(2); returns the address.
    pub fn mmap(
        &self,
        fd: i32,
        len: u64,
        prot: i32,
        flags: i32,
        offset: u64,
    ) -> Result<u64, SimError> {
        let r = res(self.k.sys_mmap(&self.p, fd, len, prot, flags, offset));
        self.k.safe_point();
        r
    }

    /// munmap(2) of the mapping at `addr`.
    pub fn munmap(&self, addr: u64) -> Result<(), SimError> {
        let r = res(self.k.sys_munmap(&self.p, addr));
        self.k.safe_point();
        r
    }

    /// Reads `[addr, addr+len)`, faulting pages in.
    pub fn touch(&self, addr: u64, len: u64) -> Result<TouchStats, SimError> {
        let r = res(self.k.sys_touch(&self.p, addr, len));
        self.k.safe_point();
        r
    }

    /// execve(2).
    pub fn exec(&self, path: &str) -> Result<(), SimError> {
        let r = res(self.k.sys_exec(&self.p, path));
        self.k.safe_point();
        r
    }

    /// fork(2): a child sharing this process's open files and inheriting
    /// its mappings (no VNOP_MMAP: fork does not go through `ubc_map`).
    pub fn fork(&self) -> Result<Proc, SimError> {
        let r = res(self.k.sys_fork(&self.p)).map(|p| Proc {
            k: Arc::clone(&self.k),
            p,
        });
        self.k.safe_point();
        r
    }

    /// posix_spawn(2) of `path`: this process's thread maps the child's
    /// image and dyld (their VNOP_MMAPs are this process's); the child
    /// faults its entry pages at [`Proc::start`].
    pub fn posix_spawn(&self, path: &str) -> Result<Proc, SimError> {
        let r = res(self.k.sys_spawn(&self.p, path)).map(|p| Proc {
            k: Arc::clone(&self.k),
            p,
        });
        self.k.safe_point();
        r
    }

    /// A spawned child's first run on its own thread: dyld's entry-page
    /// faults (nothing for a process that was not spawned).
    pub fn start(&self) -> Result<TouchStats, SimError> {
        let r = res(self.k.sys_start(&self.p));
        self.k.safe_point();
        r
    }

    /// mount(2) by this process: the mount's `f_owner` is its uid
    /// (`mount_common`, bsd/vfs/vfs_syscalls.c, xnu-11417.121.6), so it
    /// may unmount it without being root.
    pub fn mount(&self, fstype: &str, on: &str) -> Result<(), SimError> {
        let m = res(self.k.vfs.mount(&self.k, fstype, on))?;
        self.k.vfs.set_mount_owner(&m, self.p.uid);
        Ok(())
    }

    /// unmount(2) called by this process (umount(8), diskarbitrationd).
    pub fn unmount(&self, on: &str, force: bool) -> Result<(), SimError> {
        let r = res(self.k.sys_unmount(&self.p, on, force));
        self.k.safe_point();
        r
    }

    /// exit(2).
    pub fn exit(&self) {
        self.k.sys_exit(&self.p);
        self.k.safe_point();
    }

    /// Live mappings.
    pub fn mappings(&self) -> Vec<Mapping> {
        self.k.mappings(&self.p)
    }

    /// Size of the file open on `fd`.
    pub fn file_size(&self, fd: i32) -> Option<u64> {
        self.k.fd_vnode(&self.p, fd).map(|v| v.size)
    }

    /// Open descriptors.
    pub fn fds(&self) -> Vec<i32> {
        self.k.open_fds(&self.p)
    }

    /// Runs `f` on the calling OS thread as one thread of this process (one
    /// identity, one CPU), so the direct dispatches inside it skip entering
    /// the process per call; then a safe point.
    pub fn run_as<R>(&self, f: impl FnOnce() -> R) -> R {
        let r = {
            let _as = vm::enter(&self.k, &self.p);
            f()
        };
        self.k.safe_point();
        r
    }

    /// Looks `path` up (namei; the iocount goes again) and returns a handle
    /// that dispatches single vnode operations on its vnode as this process.
    pub fn direct_vnode(&self, path: &str) -> Result<DirectVnode, SimError> {
        let vp = res(self.k.vfs.lookup(&self.k, path))?;
        self.k.vfs.put(&self.k, &vp);
        Ok(DirectVnode {
            k: Arc::clone(&self.k),
            p: Arc::clone(&self.p),
            vp,
        })
    }
}

/// One vnode and the process dispatching on it: each call is exactly XNU's
/// `VNOP_*` wrapper, `(*vp->v_op[desc->vdesc_offset])(&args)`, through
/// whatever the vector holds now (the filesystem's original, or a kext's
/// hook), without the syscall, VM or UBC machinery around it. No counts are
/// taken (a caller of a real wrapper holds its own), and violations surface
/// at the next safe point (`Sim::safe_point`, `Proc::run_as`, any `Proc` or
/// `Sim` call), not after each dispatch.
pub struct DirectVnode {
    k: Arc<Kernel>,
    p: Arc<Process>,
    vp: Arc<Vnode>,
}

impl fmt::Debug for DirectVnode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectVnode")
            .field("pid", &self.p.pid)
            .field("path", &self.vp.path)
            .finish()
    }
}

impl DirectVnode {
    /// Runs `dispatch` as a thread of the handle's process: on the current
    /// identity when the thread already runs as it (`Proc::run_as`).
    fn as_proc(&self, dispatch: impl FnOnce() -> i32) -> i32 {
        let current = crate::context::identity(self.k.boot);
        if current.is_some_and(|id| id.pid == self.p.pid) {
            return dispatch();
        }
        let _as = vm::enter(&self.k, &self.p);
        dispatch()
    }

    /// VNOP_PAGEIN of `size` bytes at file offset `offset` as a PAGEINV2
    /// filesystem gets it (`a_pl == NULL`, UPL_IOSYNC); returns its errno.
    pub fn pagein(&self, offset: i64, size: usize) -> i32 {
        let mut args = xnu::vnop_pagein_args {
            a_desc: crate::vfs::desc_addr(Vop::Pagein) as *mut xnu::vnodeop_desc,
            a_vp: self.vp.addr as xnu::vnode_t,
            a_pl: std::ptr::null_mut(),
            a_pl_offset: 0,
            a_f_offset: offset,
            a_size: size,
            a_flags: xnu::UPL_IOSYNC as i32,
            a_context: self.p.ctx_addr as xnu::vfs_context_t,
        };
        self.as_proc(|| {
            self.k
                .vfs
                .dispatch(&self.k, &self.vp, Vop::Pagein, (&raw mut args).cast())
        })
    }

    /// VNOP_MMAP with `fflags` (`prot::*` bits); returns its errno.
    pub fn mmap(&self, fflags: i32) -> i32 {
        let mut args = xnu::vnop_mmap_args {
            a_desc: crate::vfs::desc_addr(Vop::Mmap) as *mut xnu::vnodeop_desc,
            a_vp: self.vp.addr as xnu::vnode_t,
            a_fflags: fflags,
            a_context: self.p.ctx_addr as xnu::vfs_context_t,
        };
        self.as_proc(|| {
            self.k
                .vfs
                .dispatch(&self.k, &self.vp, Vop::Mmap, (&raw mut args).cast())
        })
    }

    /// VNOP_MNOMAP; returns its errno.
    pub fn mnomap(&self) -> i32 {
        let mut args = xnu::vnop_mnomap_args {
            a_desc: crate::vfs::desc_addr(Vop::Mnomap) as *mut xnu::vnodeop_desc,
            a_vp: self.vp.addr as xnu::vnode_t,
            a_context: self.p.ctx_addr as xnu::vfs_context_t,
        };
        self.as_proc(|| {
            self.k
                .vfs
                .dispatch(&self.k, &self.vp, Vop::Mnomap, (&raw mut args).cast())
        })
    }
}
