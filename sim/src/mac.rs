//! The MAC framework: policy registration (`UNLOADOK` needed to unregister,
//! unique names) and the hooks the VM and open/exec paths call.
//!
//! The check cost of an unloadable policy: `mac_policy_register` bumps
//! `staticmax` only for a policy without `MPC_LOADTIME_FLAG_UNLOADOK` whose
//! handle lands next to the last static entry. While `numloaded > staticmax`,
//! every MAC_CHECK / MAC_PERFORM calls `mac_policy_list_conditional_busy`,
//! which takes `mac_policy_mtx` (and `mac_policy_list_unbusy` takes it again):
//! two acquisitions of one global mutex per check, on every CPU
//! (security/mac_base.c, security/mac_internal.h, xnu-11417.121.6).

use std::ffi::{CStr, c_char};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::context::Frame;
use crate::kernel::Kernel;
use crate::vfs::{Vnode, errno};
use crate::violation::Violation;
use crate::xnu;
use crate::{read, write};

/// One registered policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `mac_policy_handle_t`.
    pub handle: u32,
    /// `mpc_name`.
    pub name: String,
    /// The kext's `mac_policy_conf`.
    pub conf: usize,
    /// Counted in `staticmax` (no UNLOADOK, adjacent to the static entries).
    pub is_static: bool,
}

/// The policy list. Hooks run under the read lock; unregister takes the
/// write lock, so it waits for running hooks (mac_policy_grab_exclusive).
#[derive(Default)]
pub struct Mac {
    policies: RwLock<(Vec<Policy>, u32)>,
    /// `mac_policy_mtx`, taken by the busy/unbusy pair around each check
    /// while a non-static policy is loaded.
    policy_mtx: Mutex<()>,
    /// Acquisitions of `policy_mtx` by checks (two per check).
    busy_acquisitions: AtomicU64,
}

/// Reads a C string.
fn cstr(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null name pointer of a policy conf is a C string.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The ops slot `i` of a policy.
fn slot(conf: usize, i: u32) -> usize {
    let c = conf as *const xnu::mac_policy_conf;
    // SAFETY: `conf` is a registered, live mac_policy_conf.
    let ops = unsafe { (*c).mpc_ops };
    if ops.is_null() {
        return 0;
    }
    // SAFETY: `ops` points at a full mac_policy_ops (MAC_POLICY_OPS_SLOTS slots).
    let f = unsafe { (*ops).mpo_slots[i as usize] };
    f.map_or(0, |f| f as usize)
}

impl Mac {
    /// mac_policy_register.
    pub fn register(&self, k: &Kernel, conf: usize) -> Result<u32, i32> {
        if conf == 0 {
            return Err(errno::EINVAL);
        }
        // SAFETY: a non-null conf handed in by the kext.
        let c = unsafe { std::ptr::read(conf as *const xnu::mac_policy_conf) };
        let (name, full, ops) = (c.mpc_name, c.mpc_fullname, c.mpc_ops);
        let (Some(name), Some(_)) = (cstr(name), cstr(full)) else {
            k.violation(Violation::KernelPanic(
                "mac_policy_register: NULL mpc_name or mpc_fullname".into(),
            ));
            return Err(errno::EINVAL);
        };
        if ops.is_null() {
            k.violation(Violation::KernelPanic(
                "mac_policy_register: NULL mpc_ops".into(),
            ));
            return Err(errno::EINVAL);
        }
        k.kext_image.note(conf);
        k.kext_image.note(ops as usize);
        for i in 0..xnu::MAC_POLICY_OPS_SLOTS {
            k.kext_image.note(slot(conf, i));
        }
        let handle = {
            let mut p = write(&self.policies);
            if p.0.iter().any(|x| x.name == name) {
                return Err(errno::EEXIST);
            }
            p.1 += 1;
            let handle = p.1;
            // The new entry takes the first free slot, index numloaded when
            // the list has no holes; it is static only without UNLOADOK and
            // at index staticmax (mac_policy_register, mac_late).
            let staticmax = p.0.iter().filter(|x| x.is_static).count();
            let unloadok = c.mpc_loadtime_flags & xnu::MPC_LOADTIME_FLAG_UNLOADOK as i32 != 0;
            let is_static = !unloadok && p.0.len() == staticmax;
            p.0.push(Policy {
                handle,
                name,
                conf,
                is_static,
            });
            handle
        };
        // Late registration runs init and initbsd at once.
        for i in [xnu::MPO_POLICY_INIT, xnu::MPO_POLICY_INITBSD] {
            call_conf_hook(k, conf, i);
        }
        Ok(handle)
    }

    /// mac_policy_unregister.
    pub fn unregister(&self, k: &Kernel, handle: u32) -> Result<(), i32> {
        let mut p = write(&self.policies);
        let i =
            p.0.iter()
                .position(|x| x.handle == handle)
                .ok_or(errno::ENOENT)?;
        let conf = p.0[i].conf as *const xnu::mac_policy_conf;
        // SAFETY: a registered conf stays valid until unregistered.
        let flags = unsafe { (*conf).mpc_loadtime_flags };
        if flags & xnu::MPC_LOADTIME_FLAG_UNLOADOK as i32 == 0 {
            return Err(errno::EBUSY);
        }
        let pol = p.0.remove(i);
        drop(p);
        call_conf_hook(k, pol.conf, xnu::MPO_POLICY_DESTROY);
        Ok(())
    }

    /// Registered policies.
    pub fn policies(&self) -> Vec<Policy> {
        read(&self.policies).0.clone()
    }

    /// How often MAC checks took `mac_policy_mtx` (busy + unbusy: two per
    /// check while a non-static, i.e. unloadable, policy is registered).
    pub fn busy_acquisitions(&self) -> u64 {
        self.busy_acquisitions.load(Ordering::Relaxed)
    }

    /// `numloaded > staticmax`: checks must mark the list busy.
    fn has_dynamic(p: &[Policy]) -> bool {
        p.iter().any(|x| !x.is_static)
    }

    /// mac_policy_list_conditional_busy / mac_policy_list_unbusy: one
    /// acquisition of the global mutex.
    fn touch_policy_mtx(&self) {
        drop(crate::lock(&self.policy_mtx));
        self.busy_acquisitions.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` for every policy whose slot `i` is set, under the read lock
    /// (MAC_CHECK / MAC_PERFORM).
    fn each(&self, k: &Kernel, i: u32, f: impl FnMut(usize) -> i32) -> i32 {
        match file_operation_of(i) {
            Some(what) => crate::context::in_file_operation(what, || self.each_policy(k, i, f)),
            None => self.each_policy(k, i, f),
        }
    }

    fn each_policy(&self, k: &Kernel, i: u32, mut f: impl FnMut(usize) -> i32) -> i32 {
        let p = read(&self.policies);
        let busy = Self::has_dynamic(&p.0);
        if busy {
            self.touch_policy_mtx();
        }
        let err = self.each_locked(k, &p.0, i, &mut f);
        if busy {
            self.touch_policy_mtx();
        }
        err
    }

    fn each_locked(
        &self,
        k: &Kernel,
        p: &[Policy],
        i: u32,
        f: &mut impl FnMut(usize) -> i32,
    ) -> i32 {
        let mut err = 0;
        for pol in p {
            let hook = slot(pol.conf, i);
            if hook == 0 {
                continue;
            }
            if !k.kext.is_loaded() {
                k.violation(Violation::CallAfterUnload {
                    what: format!("MAC policy {} slot {i}", pol.name),
                    addr: hook as u64,
                });
                continue;
            }
            let r = k.kext_call(Frame::Callback, || f(hook));
            if r != 0 && err == 0 {
                err = r;
            }
        }
        err
    }

    /// mac_file_check_mmap (mmap(2) only; label is NULL).
    #[expect(clippy::too_many_arguments, reason = "the hook's own signature")]
    pub fn file_check_mmap(
        &self,
        k: &Kernel,
        cred: usize,
        fg: usize,
        prot: i32,
        flags: i32,
        pos: u64,
        maxprot: &mut i32,
    ) -> i32 {
        let before = *maxprot;
        let mp = maxprot as *mut i32;
        let err = self.each(k, xnu::MPO_FILE_CHECK_MMAP, |hook| {
            // SAFETY: the slot holds an mpo_file_check_mmap_t.
            let f: unsafe extern "C" fn(
                xnu::kauth_cred_t,
                *mut xnu::fileglob,
                *mut xnu::label,
                i32,
                i32,
                u64,
                *mut i32,
            ) -> i32 = unsafe { std::mem::transmute(hook) };
            // SAFETY: arguments as mac_file_check_mmap passes them.
            unsafe {
                f(
                    cred as _,
                    fg as _,
                    std::ptr::null_mut(),
                    prot,
                    flags,
                    pos,
                    mp,
                )
            }
        });
        if *maxprot & !before != 0 {
            k.violation(Violation::KernelPanic(
                "mac_file_check_mmap: policy added maxprot bits".into(),
            ));
        }
        err
    }

    /// mac_vnode_check_open.
    pub fn vnode_check_open(&self, k: &Kernel, cred: usize, vp: &Vnode, acc: i32) -> i32 {
        self.each(k, xnu::MPO_VNODE_CHECK_OPEN, |hook| {
            // SAFETY: the slot holds an mpo_vnode_check_open_t.
            let f: unsafe extern "C" fn(
                xnu::kauth_cred_t,
                *mut xnu::vnode,
                *mut xnu::label,
                i32,
            ) -> i32 = unsafe { std::mem::transmute(hook) };
            // SAFETY: arguments as mac_vnode_check_open passes them.
            unsafe { f(cred as _, vp.addr as _, std::ptr::null_mut(), acc) }
        })
    }

    /// mac_mount_check_umount: unmount(2) asks before dounmount, holding an
    /// iocount on the mount's root vnode (bsd/vfs/vfs_syscalls.c,
    /// xnu-11417.121.6); a non-zero result denies the unmount.
    pub fn mount_check_umount(&self, k: &Kernel, cred: usize, mount: usize) -> i32 {
        self.each(k, xnu::MPO_MOUNT_CHECK_UMOUNT, |hook| {
            // SAFETY: the slot holds an mpo_mount_check_umount_t.
            let f: unsafe extern "C" fn(
                xnu::kauth_cred_t,
                *mut xnu::mount,
                *mut xnu::label,
            ) -> i32 = unsafe { std::mem::transmute(hook) };
            // SAFETY: arguments as mac_mount_check_umount passes them.
            unsafe { f(cred as _, mount as _, std::ptr::null_mut()) }
        })
    }

    /// mac_vnode_notify_open.
    pub fn vnode_notify_open(&self, k: &Kernel, cred: usize, vp: &Vnode, acc: i32) {
        self.each(k, xnu::MPO_VNODE_NOTIFY_OPEN, |hook| {
            // SAFETY: the slot holds an mpo_vnode_notify_open_t.
            let f: unsafe extern "C" fn(xnu::kauth_cred_t, *mut xnu::vnode, *mut xnu::label, i32) =
                unsafe { std::mem::transmute(hook) };
            // SAFETY: arguments as mac_vnode_notify_open passes them.
            unsafe { f(cred as _, vp.addr as _, std::ptr::null_mut(), acc) };
            0
        });
    }

    /// mac_proc_notify_exec_complete: from task_wait_to_return on the new
    /// image's first thread, with `proc` its current_proc()
    /// (osfmk/kern/task.c, security/mac_mach.c, xnu-11417.121.6).
    pub fn proc_notify_exec_complete(&self, k: &Kernel, proc: usize) {
        self.each(k, xnu::MPO_PROC_NOTIFY_EXEC_COMPLETE, |hook| {
            // SAFETY: the slot holds an mpo_proc_notify_exec_complete_t.
            let f: unsafe extern "C" fn(xnu::proc_t) = unsafe { std::mem::transmute(hook) };
            // SAFETY: arguments as mac_proc_notify_exec_complete passes them.
            unsafe { f(proc as _) };
            0
        });
    }

    /// mac_vnode_check_exec.
    pub fn vnode_check_exec(&self, k: &Kernel, cred: usize, vp: &Vnode) -> i32 {
        self.each(k, xnu::MPO_VNODE_CHECK_EXEC, |hook| {
            type F = unsafe extern "C" fn(
                xnu::kauth_cred_t,
                *mut xnu::vnode,
                *mut xnu::vnode,
                *mut xnu::label,
                *mut xnu::label,
                *mut xnu::label,
                *mut xnu::componentname,
                *mut u32,
                *mut std::ffi::c_void,
                usize,
            ) -> i32;
            // SAFETY: the slot holds an mpo_vnode_check_exec_t.
            let f: F = unsafe { std::mem::transmute(hook) };
            let mut csflags: u32 = 0;
            let n: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: arguments as exec_check_permissions passes them.
            unsafe {
                f(
                    cred as _,
                    vp.addr as _,
                    n.cast(),
                    n.cast(),
                    n.cast(),
                    n.cast(),
                    n.cast(),
                    &raw mut csflags,
                    n,
                    0,
                )
            }
        })
    }
}

/// The check XNU makes inside a file operation (open, exec, mmap: vn_open_auth,
/// exec_check_permissions, mmap in bsd/vfs/vfs_vnops.c, bsd/kern/kern_exec.c,
/// bsd/kern/kern_mman.c, xnu-11417.121.6) that slot `i` serves, if any: its
/// hooks run marked as such (`context::in_file_operation`).
fn file_operation_of(i: u32) -> Option<&'static str> {
    match i {
        xnu::MPO_FILE_CHECK_MMAP => Some("mac_file_check_mmap"),
        xnu::MPO_VNODE_CHECK_OPEN => Some("mac_vnode_check_open"),
        xnu::MPO_VNODE_NOTIFY_OPEN => Some("mac_vnode_notify_open"),
        xnu::MPO_VNODE_CHECK_EXEC => Some("mac_vnode_check_exec"),
        _ => None,
    }
}

/// Calls a `void (*)(struct mac_policy_conf *)` slot if set.
fn call_conf_hook(k: &Kernel, conf: usize, i: u32) {
    let hook = slot(conf, i);
    if hook == 0 {
        return;
    }
    // SAFETY: policy_init/initbsd/destroy slots take the conf.
    let f: unsafe extern "C" fn(*mut xnu::mac_policy_conf) = unsafe { std::mem::transmute(hook) };
    if !k.kext.is_loaded() {
        k.violation(Violation::CallAfterUnload {
            what: format!("MAC policy slot {i}"),
            addr: hook as u64,
        });
        return;
    }
    // SAFETY: `conf` is the policy's live conf.
    k.kext_call(Frame::Callback, || unsafe { f(conf as _) });
}
