//! Mounts and the files on them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{MOUNT_SIZE, MOUNT_STATFS_OFFSET, Mount, Vfs, copy_cstr, errno};
use crate::kernel::Kernel;
use crate::xnu;
use crate::{lock, read};

impl Vfs {
    /// Mounts a filesystem of type `fstype` on `on`.
    pub fn mount(&self, k: &Kernel, fstype: &str, on: &str) -> Result<Arc<Mount>, i32> {
        if Vfs::is_stacking(fstype) {
            // nullfs_mount copies in the directory to mirror
            // (bsd/miscfs/nullfs/null_vfsops.c, xnu-11417.121.6).
            return Err(errno::EINVAL);
        }
        self.mount_with(k, fstype, on, None)
    }

    /// Mounts a stacking filesystem (nullfs, bindfs) of type `fstype` on
    /// `on`, mirroring the directory `lower` of another mount: it must be
    /// on a mount (nullfs_mount's vnode_lookup, ENOENT otherwise).
    pub fn mount_stacked(
        &self,
        k: &Kernel,
        fstype: &str,
        lower: &str,
        on: &str,
    ) -> Result<Arc<Mount>, i32> {
        if !Vfs::is_stacking(fstype) {
            return Err(errno::EINVAL);
        }
        if !lower.starts_with('/') || self.mount_for(lower).is_none() {
            return Err(errno::ENOENT);
        }
        if under(lower, on) {
            // A mount mirroring itself would look itself up forever.
            return Err(errno::EINVAL);
        }
        self.mount_with(k, fstype, on, Some(lower.to_string()))
    }

    fn mount_with(
        &self,
        k: &Kernel,
        fstype: &str,
        on: &str,
        lower: Option<String>,
    ) -> Result<Arc<Mount>, i32> {
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
            lower,
            files: Mutex::new(BTreeMap::new()),
            gone: AtomicBool::new(false),
        });
        st.mounts.push(Arc::clone(&m));
        Ok(m)
    }

    /// The mount's owner, `f_owner` of its `vfsstatfs` (the uid that
    /// mounted it; 0 for the mounts of boot and diskarbitrationd).
    pub fn mount_owner(&self, m: &Mount) -> u32 {
        let at = m.addr + MOUNT_STATFS_OFFSET + std::mem::offset_of!(xnu::vfsstatfs, f_owner);
        // SAFETY: f_owner of the vfsstatfs `mount` wrote inside the mount
        // block, which lives as long as `m`; packed, so read unaligned.
        unsafe { (at as *const u32).read_unaligned() }
    }

    /// Sets the mount's `f_owner`, as mount(2) does with the mounting
    /// caller's uid (`mount_common`, bsd/vfs/vfs_syscalls.c,
    /// xnu-11417.121.6).
    pub fn set_mount_owner(&self, m: &Mount, uid: u32) {
        let at = m.addr + MOUNT_STATFS_OFFSET + std::mem::offset_of!(xnu::vfsstatfs, f_owner);
        // SAFETY: as in mount_owner; the simulator writes it before the
        // mount is used, as mount_common does.
        unsafe { (at as *mut u32).write_unaligned(uid) };
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

    /// Adds a file to the mount that covers `path` (a stacking mount's go
    /// to the directory it mirrors).
    pub fn add_file(&self, path: &str, size: u64) -> Result<(), i32> {
        let m = self.mount_for(path).ok_or(errno::ENOENT)?;
        if let Some(dir) = &m.lower {
            return self.add_file(&lower_path(path, &m.on, dir), size);
        }
        lock(&m.files).insert(path.to_string(), size);
        Ok(())
    }
}

/// Where `path`, on a stacking mount at `on` mirroring `dir`, lives below.
pub(super) fn lower_path(path: &str, on: &str, dir: &str) -> String {
    let rest = if on == "/" {
        path
    } else {
        path.strip_prefix(on).unwrap_or(path)
    };
    format!("{}{rest}", dir.trim_end_matches('/'))
}

/// Whether `path` is `dir` or below it.
pub fn under(path: &str, dir: &str) -> bool {
    dir == "/" && path.starts_with('/')
        || path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}
