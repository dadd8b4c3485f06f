//! The sysctl tree: registration into the C lists the kext's OIDs link
//! through, name lookup, and requests with XNU's semantics (size query with
//! `oldptr == 0`, partial copy then ENOMEM, copyout faults, root checks).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, RwLock};

use crate::context::{self, Frame};
use crate::kernel::Kernel;
use crate::vfs::errno;
use crate::violation::Violation;
use crate::vm::{self, Process};
use crate::xnu;
use crate::{lock, read, write};

unsafe extern "C" {
    static mut sysctl__kern_children: xnu::sysctl_oid_list;
}

/// EISDIR: the name is a node without a handler.
pub const EISDIR: i32 = 21;

/// One registered OID.
#[derive(Clone, Debug)]
pub struct Oid {
    /// The kext's `struct sysctl_oid`.
    pub addr: usize,
    /// The `sysctl_oid_list` it hangs off.
    pub parent: usize,
    /// `oid_name`.
    pub name: String,
    /// `oid_number`.
    pub number: i32,
    /// `oid_kind`.
    pub kind: u32,
}

/// The tree.
#[derive(Default)]
pub struct Sysctl {
    oids: RwLock<Vec<Oid>>,
    /// `sysctl_unlocked_node_lock`: handlers without CTLFLAG_LOCKED run under it.
    unlocked_node: Mutex<()>,
}

/// A failed request: errno plus the length the caller gets back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysctlError {
    /// errno.
    pub errno: i32,
    /// `*oldlenp` after the call.
    pub len: usize,
}

/// `&sysctl__kern_children`.
pub fn kern_children() -> usize {
    (&raw const sysctl__kern_children) as usize
}

fn oid_ptr(addr: usize) -> *mut xnu::sysctl_oid {
    addr as *mut xnu::sysctl_oid
}

/// Reads one OID.
fn oid_read(addr: usize) -> xnu::sysctl_oid {
    // SAFETY: `addr` is a registered (or being registered) kext OID.
    unsafe { std::ptr::read(oid_ptr(addr)) }
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: OID names are C strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Links `addr` into the C list at `list`, sorted by number, as XNU does.
fn list_insert(list: usize, addr: usize) {
    let l = list as *mut xnu::sysctl_oid_list;
    let num = oid_read(addr).oid_number;
    // SAFETY: `l` is a live sysctl_oid_list (kern's or a registered node's).
    let mut prev: *mut xnu::sysctl_oid = std::ptr::null_mut();
    // SAFETY: reading the list head.
    let mut cur = unsafe { (*l).slh_first };
    while !cur.is_null() && oid_read(cur as usize).oid_number < num {
        prev = cur;
        cur = oid_read(cur as usize).oid_link.sle_next;
    }
    // SAFETY: `addr` is the OID being registered (writable kext memory).
    unsafe { (*oid_ptr(addr)).oid_link.sle_next = cur };
    if prev.is_null() {
        // SAFETY: as above, the list head.
        unsafe { (*l).slh_first = oid_ptr(addr) };
    } else {
        // SAFETY: `prev` is a registered OID in this list.
        unsafe { (*prev).oid_link.sle_next = oid_ptr(addr) };
    }
}

/// Unlinks `addr` from the C list at `list`.
fn list_remove(list: usize, addr: usize) {
    let l = list as *mut xnu::sysctl_oid_list;
    // SAFETY: `l` is a live sysctl_oid_list.
    let mut cur = unsafe { (*l).slh_first };
    let mut prev: *mut xnu::sysctl_oid = std::ptr::null_mut();
    while !cur.is_null() {
        let next = oid_read(cur as usize).oid_link.sle_next;
        if cur as usize == addr {
            if prev.is_null() {
                // SAFETY: the list head.
                unsafe { (*l).slh_first = next };
            } else {
                // SAFETY: `prev` is a registered OID in this list.
                unsafe { (*prev).oid_link.sle_next = next };
            }
            return;
        }
        prev = cur;
        cur = next;
    }
}

impl Sysctl {
    /// sysctl_register_oid.
    pub fn register(&self, k: &Kernel, addr: usize) {
        if addr == 0 {
            k.violation(Violation::KernelPanic("sysctl_register_oid(NULL)".into()));
            return;
        }
        let o = oid_read(addr);
        let name = cstr(o.oid_name);
        if o.oid_version != xnu::SYSCTL_OID_VERSION as c_int {
            k.log_line(format!(
                "sysctl_register_oid: OID {name} has version {}, ignored",
                o.oid_version
            ));
            return;
        }
        if o.oid_kind as u32 & xnu::CTLFLAG_PERMANENT != 0 {
            k.violation(Violation::KernelPanic(format!(
                "sysctl_register_oid: permanent OID {name} from a kext"
            )));
            return;
        }
        if o.oid_parent.is_null() {
            k.violation(Violation::KernelPanic(format!(
                "sysctl_register_oid: OID {name} without a parent"
            )));
            return;
        }
        if o.oid_number < xnu::OID_AUTO {
            k.violation(Violation::Contract {
                rule: "sysctl_register_oid.valid_number",
                detail: format!("OID {name} has number {}", o.oid_number),
            });
            return;
        }
        let parent = o.oid_parent as usize;
        let mut oids = write(&self.oids);
        if o.oid_number != xnu::OID_AUTO
            && oids
                .iter()
                .any(|x| x.parent == parent && x.number == o.oid_number && x.addr != addr)
        {
            // sysctl_register_oid_locked: "attempting to register a sysctl at
            // previously registered slot".
            k.violation(Violation::Contract {
                rule: "sysctl_register_oid.unique_number",
                detail: format!("OID {name} reuses number {}", o.oid_number),
            });
            return;
        }
        if oids
            .iter()
            .any(|x| x.addr == addr || (x.parent == parent && x.name == name))
        {
            k.log_line(format!(
                "sysctl_register_oid: {name} already registered, ignored"
            ));
            return;
        }
        let mut number = o.oid_number;
        if number == xnu::OID_AUTO {
            number = xnu::OID_AUTO_START as i32;
            while oids
                .iter()
                .any(|x| x.parent == parent && x.number == number)
            {
                number += 1;
            }
            // SAFETY: the kext's OID is writable (it is linked through oid_link).
            unsafe { (*oid_ptr(addr)).oid_number = number };
        }
        k.kext_image.note(addr);
        k.kext_image.note(o.oid_handler.map_or(0, |f| f as usize));
        list_insert(parent, addr);
        oids.push(Oid {
            addr,
            parent,
            name,
            number,
            kind: o.oid_kind as u32,
        });
    }

    /// sysctl_unregister_oid: waits for running handlers (write lock).
    pub fn unregister(&self, k: &Kernel, addr: usize) {
        let mut oids = write(&self.oids);
        match oids.iter().position(|x| x.addr == addr) {
            Some(i) => {
                let o = oids.remove(i);
                list_remove(o.parent, addr);
            }
            None => k.log_line(format!("sysctl_unregister_oid: {addr:#x} not registered")),
        }
    }

    /// Registered OIDs.
    pub fn oids(&self) -> Vec<Oid> {
        read(&self.oids).clone()
    }

    /// Full dotted names of every registered OID.
    pub fn names(&self) -> Vec<String> {
        self.named(|_| true)
    }

    /// The names a userland listing (`sysctl -A`) shows, and so reads: not
    /// those marked CTLFLAG_MASKED ("don't show in sysctl listing in
    /// userland", bsd/sys/sysctl.h, xnu-11417.121.6).
    pub fn listed_names(&self) -> Vec<String> {
        self.named(|o| o.kind & xnu::CTLFLAG_MASKED == 0)
    }

    /// Full dotted names of the registered OIDs `keep` selects.
    fn named(&self, keep: impl Fn(&Oid) -> bool) -> Vec<String> {
        let oids = self.oids();
        let mut out = Vec::new();
        for o in oids.iter().filter(|o| keep(o)) {
            let mut parts = vec![o.name.clone()];
            let mut parent = o.parent;
            while parent != kern_children() {
                match oids
                    .iter()
                    .find(|p| oid_read(p.addr).oid_arg1 as usize == parent)
                {
                    Some(p) => {
                        parts.push(p.name.clone());
                        parent = p.parent;
                    }
                    None => break,
                }
            }
            parts.push("kern".into());
            parts.reverse();
            out.push(parts.join("."));
        }
        out.sort();
        out
    }

    fn resolve(&self, name: &str) -> Result<Oid, i32> {
        let mut parts = name.split('.');
        if parts.next() != Some("kern") {
            return Err(errno::ENOENT);
        }
        let oids = read(&self.oids);
        let mut list = kern_children();
        let mut found: Option<Oid> = None;
        for part in parts {
            if let Some(prev) = &found {
                if prev.kind & xnu::CTLTYPE != xnu::CTLTYPE_NODE {
                    return Err(errno::ENOENT);
                }
                list = oid_read(prev.addr).oid_arg1 as usize;
            }
            found = Some(
                oids.iter()
                    .find(|o| o.parent == list && o.name == part)
                    .cloned()
                    .ok_or(errno::ENOENT)?,
            );
        }
        found.ok_or(errno::ENOENT)
    }

    /// One request as `sysctlbyname` makes it.
    pub fn request(
        &self,
        k: &Kernel,
        p: &Process,
        name: &str,
        old: Option<&mut [u8]>,
        new: Option<&[u8]>,
    ) -> Result<usize, SysctlError> {
        let fail = |e| SysctlError { errno: e, len: 0 };
        if name == VM_PAGESIZE {
            return kernel_int(k.config.page_size as i32, old, new);
        }
        let oid = self.resolve(name).map_err(fail)?;
        let o = oid_read(oid.addr);
        let kind = o.oid_kind as u32;
        if new.is_some() {
            if kind & xnu::CTLFLAG_WR == 0 {
                return Err(fail(errno::EPERM));
            }
            if kind & xnu::CTLFLAG_ANYBODY == 0 && p.uid != 0 {
                return Err(fail(errno::EPERM));
            }
        }
        let Some(handler) = o.oid_handler else {
            return Err(fail(if kind & xnu::CTLTYPE == xnu::CTLTYPE_NODE {
                EISDIR
            } else {
                errno::EINVAL
            }));
        };
        if !k.kext.is_loaded() {
            k.violation(Violation::CallAfterUnload {
                what: format!("sysctl handler of {name}"),
                addr: handler as usize as u64,
            });
            return Err(fail(errno::ENOENT));
        }
        let (oldptr, oldlen) = match old {
            Some(b) => (b.as_mut_ptr() as u64, b.len()),
            None => (0, 0),
        };
        let (newptr, newlen) = match new {
            Some(b) => (b.as_ptr() as u64, b.len()),
            None => (0, 0),
        };
        let req_addr = k.kalloc_zero(size_of::<xnu::sysctl_req>(), "sysctl_req");
        let req = req_addr as *mut xnu::sysctl_req;
        let init = xnu::sysctl_req {
            p: p.proc_addr as *mut xnu::proc_,
            lock: 0,
            oldptr,
            oldlen,
            oldidx: 0,
            oldfunc: Some(sysctl_old_user),
            newptr,
            newlen,
            newidx: 0,
            newfunc: Some(sysctl_new_user),
        };
        // SAFETY: `req` is a fresh, zeroed, aligned sysctl_req block.
        unsafe { std::ptr::write(req, init) };
        let err = {
            let _tree = read(&self.oids);
            let _node = (kind & xnu::CTLFLAG_LOCKED == 0).then(|| lock(&self.unlocked_node));
            let _g = vm::enter(k, p);
            k.kext_call_budget(Frame::Callback, crate::stack::ENTRY_BUDGET, || {
                // SAFETY: the registered handler with SYSCTL_HANDLER_ARGS.
                unsafe { handler(oid_ptr(oid.addr), o.oid_arg1, o.oid_arg2, req) }
            })
        };
        // SAFETY: `req` is still the live block written above.
        let done = unsafe { std::ptr::read(req) };
        k.arena.free(req_addr);
        if err < 0 {
            // The handler's value is the syscall's errno: ERESTART (-1) makes
            // unix_syscall back the PC up and rerun sysctl(2) forever,
            // EJUSTRETURN (-2) returns leaving the registers unset
            // (bsd/dev/{arm,i386}/systemcalls.c).
            k.violation(Violation::Contract {
                rule: "sysctl_handler.returns_errno",
                detail: format!("a sysctl handler returned {err}"),
            });
        }
        let len = if done.oldptr != 0 && done.oldidx > done.oldlen {
            done.oldlen
        } else {
            done.oldidx
        };
        if err != 0 {
            Err(SysctlError { errno: err, len })
        } else {
            Ok(len)
        }
    }
}

/// The kernel's own page size, as userspace reads it:
/// `SYSCTL_INT(_vm, OID_AUTO, pagesize, CTLFLAG_RD | CTLFLAG_LOCKED,
/// &page_size, ...)` (bsd/vm/vm_unix.c, xnu-7195.141.2 and
/// xnu-11417.121.6), the same for every caller. The one node of XNU's own
/// tree the companion reads; the rest of it is not modelled.
pub const VM_PAGESIZE: &str = "vm.pagesize";

/// A read-only `SYSCTL_INT` of the kernel's, answered as sysctl_handle_int
/// and sysctl_old_user answer (bsd/kern/kern_newsysctl.c,
/// xnu-11417.121.6): a write is EPERM (not CTLFLAG_WR); a size query
/// (no buffer) gives 4; a shorter buffer gets what fits, then ENOMEM.
fn kernel_int(v: i32, old: Option<&mut [u8]>, new: Option<&[u8]>) -> Result<usize, SysctlError> {
    let bytes = v.to_ne_bytes();
    if new.is_some() {
        return Err(SysctlError {
            errno: errno::EPERM,
            len: 0,
        });
    }
    let Some(buf) = old else {
        return Ok(bytes.len());
    };
    let n = buf.len().min(bytes.len());
    buf[..n].copy_from_slice(&bytes[..n]);
    if n < bytes.len() {
        return Err(SysctlError {
            errno: errno::ENOMEM,
            len: n,
        });
    }
    Ok(n)
}

/// copyout: a sleeping call (it may wait in `Sim::hold_copyout`), and
/// faults on injection.
pub fn copyout(k: &Kernel, src: usize, dst: u64, len: usize) -> i32 {
    if context::spins_held() > 0 {
        k.violation(Violation::SpinlockHeld("copyout".into()));
    }
    if context::in_pagein_hook() {
        k.violation(Violation::SleepInPagein("copyout".into()));
    }
    // Faulting the user page in may sleep; a fault injected meanwhile hits
    // this copy.
    crate::hold::enter_copyout();
    let injected = k
        .copyout_faults
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok();
    if injected || dst == 0 || src == 0 {
        return errno::EFAULT;
    }
    // SAFETY: `dst` is the caller's user buffer with room for `len` (the
    // request's bounds were checked by the caller) and `src` is kernel memory
    // of at least `len` bytes as SYSCTL_OUT promises.
    unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) };
    0
}

/// `sysctl_old_user`: copies what fits, advances oldidx by the full length,
/// then ENOMEM if it did not fit; with `oldptr == 0` it only counts.
extern "C" fn sysctl_old_user(req: *mut xnu::sysctl_req, p: *const c_void, l: usize) -> c_int {
    let k = crate::kernel::current_or_abort("SYSCTL_OUT");
    // SAFETY: the kernel passes the request it built.
    let r = unsafe { &mut *req };
    let mut copied = 0;
    let mut error = 0;
    if r.oldptr != 0 {
        copied = l.min(r.oldlen.saturating_sub(r.oldidx));
        if copied > 0 {
            error = copyout(&k, p as usize, r.oldptr + r.oldidx as u64, copied);
        }
    }
    r.oldidx += l;
    if error != 0 {
        return error;
    }
    if r.oldptr != 0 && copied < l {
        return errno::ENOMEM;
    }
    0
}

/// `sysctl_new_user`: 0 when nothing is written, EINVAL when short.
extern "C" fn sysctl_new_user(req: *mut xnu::sysctl_req, p: *mut c_void, l: usize) -> c_int {
    // SAFETY: the kernel passes the request it built.
    let r = unsafe { &mut *req };
    if r.newptr == 0 {
        return 0;
    }
    if r.newlen.saturating_sub(r.newidx) < l {
        return errno::EINVAL;
    }
    if p.is_null() {
        return errno::EFAULT;
    }
    // SAFETY: copyin from the caller's buffer (newlen bytes) into the
    // handler's kernel buffer of `l` bytes.
    unsafe { std::ptr::copy((r.newptr + r.newidx as u64) as *const u8, p.cast::<u8>(), l) };
    r.newidx += l;
    0
}

/// `sysctl_handle_opaque`.
#[unsafe(no_mangle)]
extern "C" fn sysctl_handle_opaque(
    _oidp: *mut xnu::sysctl_oid,
    arg1: *mut c_void,
    arg2: c_int,
    req: *mut xnu::sysctl_req,
) -> c_int {
    let len = arg2.max(0) as usize;
    let err = sysctl_old_user(req, arg1, len);
    // SAFETY: the kernel passes the request it built.
    if err != 0 || unsafe { (*req).newptr } == 0 {
        return err;
    }
    sysctl_new_user(req, arg1, len)
}
