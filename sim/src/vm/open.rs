//! open(2) and close(2).

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{FG_DATA_OFFSET, Fileglob, O_EVTONLY, OpenFile, OpenMode, Process, enter};
use crate::context::Vop;
use crate::kernel::{Kernel, TraceOp};
use crate::lock;
use crate::vfs::{self, Vnode, errno, word};
use crate::xnu;

impl Kernel {
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
    pub(super) fn vnop_close(&self, ctx: usize, vp: &Vnode, fflag: i32) {
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
}
