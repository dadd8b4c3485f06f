//! A second vnode-op hooker: another loaded kext (a DLP or EDR product, say)
//! that patches the VNOP_MMAP / VNOP_PAGEIN / VNOP_MNOMAP entries (with
//! `foreign_hook_all`, VNOP_CLOSE too; with `foreign_interpose`, also
//! VNOP_LOOKUP and VNOP_RECLAIM) of a filesystem's vector the way
//! maptrace does, and forwards each call to the entry it found there. It
//! can hook before maptrace (maptrace then hooks over it) or after (it then
//! calls maptrace's trampoline as its original).
//!
//! XNU dispatches through whatever sits in the slot, with no lock and no
//! notion of who put it there (bsd/vfs/kpi_vfs.c VNOP_PAGEIN,
//! xnu-11417.121.6: `_err = (*vp->v_op[vnop_pagein_desc.vdesc_offset])(&a)`),
//! and a kext's unload unmaps its text (libkern/c++/OSKext.cpp
//! `OSKext::unload`). So once maptrace's stop returns success, no entry that
//! another kext saved may still be maptrace's trampoline: the simulator
//! checks that at unload (`kmod_stop.no_foreign_caller`) and catches the
//! call itself when the other kext forwards (CallAfterUnload).

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::api::{Sim, SimError};
use crate::context::{Frame, Vop};
use crate::kernel::Kernel;
use crate::lock;
use crate::vfs::{errno, word};
use crate::violation::Violation;

/// The ops the other kext can hook: maptrace's four, then VNOP_RECLAIM (an
/// interposer's only).
const OPS: [Vop; 5] = [
    Vop::Mmap,
    Vop::Pagein,
    Vop::Mnomap,
    Vop::Close,
    Vop::Reclaim,
];

/// Where a hooked vector's saved VNOP_LOOKUP goes, after `OPS`' (an
/// interposer's only; 0 when not hooked).
const LOOKUP: usize = OPS.len();

/// Hooked vectors: vector address -> the entry found in each of `OPS`, then
/// VNOP_LOOKUP's (0: that one not hooked).
static HOOKED: Mutex<Option<HashMap<usize, [usize; OPS.len() + 1]>>> = Mutex::new(None);

fn slot_index(op: Vop) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(0)
}

fn trampoline(op: Vop) -> usize {
    match op {
        Vop::Mmap => foreign_mmap as *const () as usize,
        Vop::Pagein => foreign_pagein as *const () as usize,
        Vop::Close => foreign_close as *const () as usize,
        Vop::Reclaim => foreign_reclaim as *const () as usize,
        _ => foreign_mnomap as *const () as usize,
    }
}

/// Whether `entry` is one of the other kext's trampolines (live code).
pub(crate) fn is_trampoline(entry: usize) -> bool {
    OPS.iter().any(|op| trampoline(*op) == entry) || entry == foreign_lookup as *const () as usize
}

fn offset(k: &Kernel, op: Vop) -> usize {
    let o = k.vfs.offsets;
    match op {
        Vop::Mmap => o.mmap,
        Vop::Pagein => o.pagein,
        Vop::Close => o.close,
        Vop::Reclaim => o.reclaim,
        _ => o.mnomap,
    }
}

/// The other kext's hook: forwards to the entry it found.
fn forward(op: Vop, args: *mut c_void) -> c_int {
    let k = crate::kernel::current_or_abort("foreign vnode-op hook");
    // Every vnop argument block starts with a_desc, then a_vp.
    let at = (args as *const usize).wrapping_add(1);
    // SAFETY: dispatched with an argument block of this op.
    let vp = unsafe { *at };
    let Some(v) = k.vfs.vnode(vp) else {
        return errno::EIO;
    };
    let vector = k.vfs.v_op(&v);
    let found = lock(&HOOKED)
        .as_ref()
        .and_then(|h| h.get(&vector).map(|f| f[slot_index(op)]))
        .filter(|f| *f != 0);
    let Some(found) = found else {
        return errno::EIO;
    };
    let original = k
        .vfs
        .live_vectors()
        .into_iter()
        .find(|(a, _)| *a == vector)
        .and_then(|(_, i)| i.originals.get(offset(&k, op)).copied());
    if Some(found) == original {
        return crate::vfs::call_entry(found, args);
    }
    // What it found is maptrace's trampoline.
    if !k.kext.is_loaded() {
        k.violation(Violation::CallAfterUnload {
            what: format!(
                "{} entry another kext saved when it hooked over the unloaded kext",
                op.name()
            ),
            addr: found as u64,
        });
        return original.map_or(errno::EIO, |o| crate::vfs::call_entry(o, args));
    }
    k.kext_call(Frame::VnopHook(op), || crate::vfs::call_entry(found, args))
}

extern "C" fn foreign_mmap(args: *mut c_void) -> c_int {
    forward(Vop::Mmap, args)
}

extern "C" fn foreign_pagein(args: *mut c_void) -> c_int {
    forward(Vop::Pagein, args)
}

extern "C" fn foreign_mnomap(args: *mut c_void) -> c_int {
    forward(Vop::Mnomap, args)
}

extern "C" fn foreign_close(args: *mut c_void) -> c_int {
    forward(Vop::Close, args)
}

extern "C" fn foreign_reclaim(args: *mut c_void) -> c_int {
    forward(Vop::Reclaim, args)
}

/// The interposer's VNOP_LOOKUP: never called (the model resolves paths
/// itself), only there to be other than the filesystem's.
extern "C" fn foreign_lookup(_args: *mut c_void) -> c_int {
    errno::ENOTSUP
}

/// After a successful unload: no other kext may still call maptrace's code.
pub(crate) fn check_unloaded(k: &Kernel) {
    let hooked = lock(&HOOKED).clone().unwrap_or_default();
    for (vector, found) in hooked {
        let info = k.vfs.live_vectors().into_iter().find(|(a, _)| *a == vector);
        let Some((_, info)) = info else { continue };
        for op in OPS {
            let f = found[slot_index(op)];
            if f != 0 && info.originals.get(offset(k, op)) != Some(&f) && !is_trampoline(f) {
                k.violation(Violation::Contract {
                    rule: "kmod_stop.no_foreign_caller",
                    detail: format!(
                        "stop returned success while another kext's {} hook of the {} \
                         vector still forwards to the kext's trampoline {f:#x}",
                        op.name(),
                        info.fs
                    ),
                });
            }
        }
    }
}

/// The other kext's hooks on one vector (`Sim::foreign_hook`).
#[derive(Debug)]
pub struct ForeignHook {
    vector: usize,
}

impl ForeignHook {
    /// The other kext unhooks as a careful hooker does: each of its entries
    /// still in the slot goes back (CAS) to what it found. Returns how many
    /// it could not take back (someone hooked over it); it forgets them
    /// only when all went back.
    pub fn unhook(&self, sim: &Sim) -> usize {
        let k = sim.kernel();
        let Some(found) = lock(&HOOKED)
            .as_ref()
            .and_then(|h| h.get(&self.vector).copied())
        else {
            return 0;
        };
        let mut stuck = 0;
        let lookup = (
            k.vfs.offsets.lookup,
            foreign_lookup as *const () as usize,
            found[LOOKUP],
        );
        let entries = OPS
            .into_iter()
            .map(|op| (offset(k, op), trampoline(op), found[slot_index(op)]))
            .chain([lookup]);
        for (at, ours, saved) in entries.filter(|e| e.2 != 0) {
            let slot = word(self.vector + at * 8);
            if slot
                .compare_exchange(ours, saved, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                stuck += 1;
            }
        }
        if stuck == 0 {
            lock(&HOOKED).get_or_insert_default().remove(&self.vector);
        }
        stuck
    }
}

impl Sim {
    /// Another kext hooks the VNOP_MMAP, VNOP_PAGEIN and VNOP_MNOMAP entries
    /// of the vector of the filesystem mounted over `path`, saving what it
    /// finds there (the filesystem's entry, or maptrace's trampoline) and
    /// forwarding every call to it. One such kext per vector.
    pub fn foreign_hook(&self, path: &str) -> Result<ForeignHook, SimError> {
        self.foreign_hook_ops(path, &OPS[..3], false)
    }

    /// As [`Sim::foreign_hook`], VNOP_CLOSE too: every entry maptrace
    /// hooks.
    pub fn foreign_hook_all(&self, path: &str) -> Result<ForeignHook, SimError> {
        self.foreign_hook_ops(path, &OPS[..4], false)
    }

    /// As [`Sim::foreign_hook_all`], VNOP_LOOKUP and VNOP_RECLAIM too: an
    /// interposer that leaves none of the entries maptrace hooks or
    /// fingerprints a vector by as the filesystem's own.
    pub fn foreign_interpose(&self, path: &str) -> Result<ForeignHook, SimError> {
        self.foreign_hook_ops(path, &OPS, true)
    }

    fn foreign_hook_ops(
        &self,
        path: &str,
        ops: &[Vop],
        lookup: bool,
    ) -> Result<ForeignHook, SimError> {
        let k = self.kernel();
        let m = k.vfs.mount_for(path).ok_or(SimError(errno::ENOENT))?;
        let vector = m.vector;
        let mut hooked = lock(&HOOKED);
        let h = hooked.get_or_insert_default();
        if h.contains_key(&vector) {
            return Err(SimError(errno::EBUSY));
        }
        let mut found = [0usize; OPS.len() + 1];
        for op in ops {
            found[slot_index(*op)] = word(vector + offset(k, *op) * 8).load(Ordering::Acquire);
        }
        let lookup_at = vector + k.vfs.offsets.lookup * 8;
        if lookup {
            found[LOOKUP] = word(lookup_at).load(Ordering::Acquire);
        }
        // Saved before the entries are visible, as a hooker must.
        h.insert(vector, found);
        for op in ops {
            word(vector + offset(k, *op) * 8).store(trampoline(*op), Ordering::Release);
        }
        if lookup {
            word(lookup_at).store(foreign_lookup as *const () as usize, Ordering::Release);
        }
        Ok(ForeignHook { vector })
    }
}

/// Forgets every hook (a new boot).
pub(crate) fn reset() {
    *lock(&HOOKED) = None;
}
