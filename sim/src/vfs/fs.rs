//! Filesystem types and their vnode-op vectors: the built-in ones at boot,
//! `vfs_fsadd`/`vfs_fsremove` for kexts, and another kext's guarded vectors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::desc::{vfs_op_init, vn_default_error};
use super::originals::{
    dead_vnop_eio, filesystem_entries, kext_filesystem_entries, sim_vnop_ok, stacking_entries,
};
use super::{
    BUILTIN_FS, COUNTS_BASE, FsType, POISON_WORD, STACKING_FS, V_KUSECOUNT, VNODE_SIZE, VectorInfo,
    Vfs, VfsState, errno, word,
};
use crate::arena::{Arena, Owner};
use crate::kernel::{Config, Kernel};
use crate::violation::Violation;
use crate::xnu;
use crate::{lock, read};

/// deadfs's vector: every operation fails but reclaim and close.
fn dead_entries(o: super::VopOffsets) -> Vec<usize> {
    let default = vn_default_error as *const () as usize;
    let mut entries = vec![default; o.numops];
    for e in [o.mmap, o.mnomap, o.pagein, o.mmap_check] {
        entries[e] = dead_vnop_eio as *const () as usize;
    }
    entries[o.reclaim] = sim_vnop_ok as *const () as usize;
    // dead_nullop (bsd/miscfs/deadfs/dead_vnops.c, xnu-11417.121.6).
    entries[o.close] = sim_vnop_ok as *const () as usize;
    entries
}

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
        let offsets = vfs_op_init(config.release);
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
            kext_fs_names: Mutex::new(Vec::new()),
            guarded: Mutex::new(std::collections::HashSet::new()),
        };
        vfs.dead_vector = vfs.kernel_vector(arena, "deadfs", dead_entries(offsets));
        let builtin = BUILTIN_FS
            .iter()
            .map(|(name, v2)| (*name, *v2, filesystem_entries(offsets)))
            .chain(
                STACKING_FS
                    .iter()
                    .map(|name| (*name, false, stacking_entries(offsets))),
            );
        for (name, v2, entries) in builtin {
            let vector = vfs.kernel_vector(arena, name, entries);
            let handle = arena
                .alloc(64, 16, false, Owner::Kernel, "vfstable")
                .unwrap_or(0);
            vfs.state_mut().fstypes.push(Arc::new(FsType {
                name: name.to_string(),
                handle,
                vectors: vec![vector],
                owner: Owner::Kernel,
                flags: if v2 { xnu::VFS_TBLVNOP_PAGEINV2 } else { 0 },
                mounts: AtomicU32::new(0),
            }));
        }
        vfs
    }

    /// Builds a kernel filesystem's vector (heap memory, like vfs_fsadd).
    fn kernel_vector(&self, arena: &Arena, fs: &str, entries: Vec<usize>) -> usize {
        let o = self.offsets;
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

    /// Whether `fstype` mirrors another mount's directory (nullfs, bindfs).
    pub fn is_stacking(fstype: &str) -> bool {
        STACKING_FS.contains(&fstype)
    }

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
        // Each kext's filesystem has its own code (lookup, reclaim): a new
        // type at a reused address is told apart from the old one by them.
        let kext = {
            let mut names = lock(&self.kext_fs_names);
            names.iter().position(|n| n == name).unwrap_or_else(|| {
                names.push(name.to_string());
                names.len() - 1
            })
        };
        let entries = kext_filesystem_entries(o, kext);
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
}
