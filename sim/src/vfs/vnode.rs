//! Vnodes: namei, instantiation, recycling and reuse of their blocks.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{
    Ubc, V_IOCOUNT, V_KUSECOUNT, V_USECOUNT, VNODE_SIZE, Vfs, Vnode, errno, field_i32, word,
};
use crate::kernel::Kernel;
use crate::xnu;
use crate::{lock, read};

impl Vfs {
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
        // A stacking filesystem's vnode holds a usecount on the lower one
        // (null_nodeget: vnode_ref(lowervp), bsd/miscfs/nullfs/null_subr.c,
        // xnu-11417.121.6).
        let lower = match &m.lower {
            Some(dir) => {
                let lower_path = super::mount::lower_path(path, &m.on, dir);
                let lower = self.lookup(k, &lower_path)?;
                self.vref(&lower);
                self.put(k, &lower);
                Some(lower)
            }
            None => None,
        };
        let size = match &lower {
            Some(l) => l.size,
            None => *lock(&m.files).get(path).ok_or(errno::ENOENT)?,
        };
        let mut st = self.state_mut();
        if let Some(vp) = st.by_path.get(path) {
            let vp = Arc::clone(vp);
            drop(st);
            // Another thread's vnode won (null_hashins): ours is not made.
            if let Some(l) = &lower {
                self.rele(k, l);
            }
            return Ok(vp);
        }
        let (addr, vid) = match st.free_blocks.pop() {
            Some(b) => b,
            None => (k.kalloc(VNODE_SIZE, "vnode"), 1),
        };
        let vp = Arc::new(Vnode {
            lower,
            ..self.init_vnode(addr, vid, xnu::VREG, m.addr, path, size, 0, m.vector, 0)
        });
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
            lower: None,
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
}
