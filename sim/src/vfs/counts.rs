//! The vnode counts (iocount, usecount, kusecount) and what their last
//! release does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::desc::desc_addr;
use super::{V_IOCOUNT, V_KUSECOUNT, V_USECOUNT, Vfs, Vnode, errno, field_i32, word};
use crate::context::Vop;
use crate::kernel::Kernel;
use crate::lock;
use crate::violation::Violation;
use crate::xnu;

impl Vfs {
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
}
