//! Process, credential and `vfs_context` KPIs.

use std::ffi::{c_char, c_int};
use std::sync::atomic::Ordering;

use super::k;
use crate::arena::Owner;
use crate::kernel::{Kernel, with_identity};
use crate::vfs::{self, errno, word};
use crate::violation::Violation;
use crate::xnu;

fn current_process(k: &Kernel) -> Option<std::sync::Arc<crate::vm::Process>> {
    k.procs.get(k.identity().pid)
}

#[unsafe(no_mangle)]
extern "C" fn proc_suser(p: xnu::proc_t) -> c_int {
    let k = k("proc_suser");
    match k.procs.by_object(p as usize) {
        Some(p) if p.uid == 0 => 0,
        _ => errno::EPERM,
    }
}

#[unsafe(no_mangle)]
extern "C" fn kauth_cred_get() -> xnu::kauth_cred_t {
    let k = k("kauth_cred_get");
    current_process(&k).map_or(0, |p| p.cred_addr) as xnu::kauth_cred_t
}

/// The credential's effective uid: `posix_cred_get(cred)->cr_uid`, read
/// unchecked, so anything but a credential faults
/// (bsd/kern/kern_credential.c kauth_cred_getuid, xnu-11417.121.6).
#[unsafe(no_mangle)]
extern "C" fn kauth_cred_getuid(cred: xnu::kauth_cred_t) -> xnu::uid_t {
    let k = k("kauth_cred_getuid");
    match k.procs.by_object(cred as usize) {
        Some(p) if p.cred_addr == cred as usize => p.uid,
        _ => {
            k.violation(Violation::KernelPanic(format!(
                "kauth_cred_getuid: {:#x} is not a credential",
                cred as usize
            )));
            u32::MAX
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn current_proc() -> xnu::proc_t {
    let k = k("current_proc");
    current_process(&k).map_or(0, |p| p.proc_addr) as xnu::proc_t
}

#[unsafe(no_mangle)]
extern "C" fn proc_selfpid() -> c_int {
    with_identity("proc_selfpid", |id| id.pid)
}

fn copy_name(name: &str, buf: *mut c_char, size: c_int) {
    if !buf.is_null() && size > 0 {
        vfs::copy_cstr(name, buf as usize, size as usize);
    }
}

/// proc_selfname (bsd/kern/kern_proc.c): at xnu-11417.121.6 it returns
/// for `size <= 0`, zeroes `size` bytes and copies `p_name`; at
/// xnu-7195.141.2 (the pre-12 model, [`Release::Catalina`]) it copies
/// `p_comm` with strlcpy and leaves the rest of the buffer as it was.
///
/// [`Release::Catalina`]: crate::kernel::Release::Catalina
#[unsafe(no_mangle)]
extern "C" fn proc_selfname(buf: *mut c_char, size: c_int) {
    let k = k("proc_selfname");
    let name = current_process(&k)
        .map(|p| crate::lock(&p.name).clone())
        .unwrap_or_default();
    if k.config.release == crate::kernel::Release::Sequoia && size > 0 && !buf.is_null() {
        // SAFETY: the caller passes `size` writable bytes (the KPI's contract).
        unsafe { std::ptr::write_bytes(buf.cast::<u8>(), 0, size as usize) };
    }
    copy_name(&name, buf, size);
}

#[unsafe(no_mangle)]
extern "C" fn proc_name(pid: c_int, buf: *mut c_char, size: c_int) {
    let k = k("proc_name");
    let name = k
        .procs
        .get(pid)
        .map(|p| crate::lock(&p.name).clone())
        .unwrap_or_default();
    copy_name(&name, buf, size);
}

#[unsafe(no_mangle)]
extern "C" fn proc_pid(p: xnu::proc_t) -> c_int {
    let k = k("proc_pid");
    k.procs.by_object(p as usize).map_or(-1, |p| p.pid)
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_proc(ctx: xnu::vfs_context_t) -> xnu::proc_t {
    let k = k("vfs_context_proc");
    k.procs.by_object(ctx as usize).map_or(0, |p| p.proc_addr) as xnu::proc_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_ucred(ctx: xnu::vfs_context_t) -> xnu::kauth_cred_t {
    let k = k("vfs_context_ucred");
    k.procs.by_object(ctx as usize).map_or(0, |p| p.cred_addr) as xnu::kauth_cred_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_current() -> xnu::vfs_context_t {
    let k = k("vfs_context_current");
    current_process(&k).map_or(0, |p| p.ctx_addr) as xnu::vfs_context_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_create(ctx: xnu::vfs_context_t) -> xnu::vfs_context_t {
    let k = k("vfs_context_create");
    let p = if ctx.is_null() {
        current_process(&k)
    } else {
        k.procs.by_object(ctx as usize)
    };
    let Some(p) = p else {
        return std::ptr::null_mut();
    };
    let Some(addr) = k.arena.alloc(16, 16, true, Owner::Kext, "vfs_context") else {
        return std::ptr::null_mut();
    };
    word(addr + 8).store(p.cred_addr, Ordering::Relaxed);
    k.procs.alias(addr, p.pid);
    addr as xnu::vfs_context_t
}

#[unsafe(no_mangle)]
extern "C" fn vfs_context_rele(ctx: xnu::vfs_context_t) -> c_int {
    let k = k("vfs_context_rele");
    if ctx.is_null() {
        return 0;
    }
    k.procs.unalias(ctx as usize);
    if k.arena.free(ctx as usize).is_none() {
        k.violation(Violation::BadFree(format!(
            "vfs_context_rele({:#x}) of a context not from vfs_context_create",
            ctx as usize
        )));
    }
    0
}
