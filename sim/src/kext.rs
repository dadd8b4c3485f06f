//! The kext loader: runs a `kmod_info_t`'s start routine, and on unload its
//! stop routine, honouring a refusal; after a successful stop it checks what
//! the kext left behind.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::context::{self, Frame};
use crate::kernel::Kernel;
use crate::lock;
use crate::violation::Violation;
use crate::xnu;

/// Why a load or unload did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KextError {
    /// Another kext is loaded (the simulator holds one at a time).
    Busy,
    /// No kext is loaded.
    NotLoaded,
    /// The kmod_info has no start or stop routine.
    BadKmodInfo,
    /// The real shim is not compiled into this build.
    NotLinked,
    /// start returned this kern_return_t: the kext is not loaded.
    StartFailed(i32),
    /// stop returned this kern_return_t: the kext stays loaded.
    StopRefused(i32),
}

impl std::fmt::Display for KextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KextError::Busy => write!(f, "a kext is already loaded"),
            KextError::NotLoaded => write!(f, "no kext is loaded"),
            KextError::BadKmodInfo => write!(f, "kmod_info without start/stop"),
            KextError::NotLinked => write!(f, "the shim (kext-shim/src/*.c) is not in this build"),
            KextError::StartFailed(r) => write!(f, "kext start failed ({r})"),
            KextError::StopRefused(r) => write!(f, "Kext did not stop ({r})"),
        }
    }
}

impl std::error::Error for KextError {}

/// The one kext slot.
#[derive(Default)]
pub struct KextSlot {
    loaded: AtomicBool,
    info: Mutex<Option<usize>>,
}

type KmodFn =
    unsafe extern "C" fn(*mut xnu::kmod_info, *mut std::ffi::c_void) -> xnu::kern_return_t;

/// Reads start or stop out of the packed kmod_info.
fn routine(ki: usize, stop: bool) -> Option<KmodFn> {
    let p = ki as *const xnu::kmod_info;
    // SAFETY: `ki` is the caller's live kmod_info (packed: read unaligned).
    let info = unsafe { std::ptr::read_unaligned(p) };
    if stop { info.stop } else { info.start }
}

impl KextSlot {
    /// Whether kext code may run: between start being called and stop
    /// returning success.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Loads: calls start(ki, NULL) as kernel_task.
    ///
    /// # Safety
    /// `ki` must point to a valid `kmod_info` whose start and stop routines
    /// follow the kmod contract, and stay valid while the kext is loaded.
    pub unsafe fn load(&self, k: &Kernel, ki: *mut xnu::kmod_info) -> Result<(), KextError> {
        let mut slot = lock(&self.info);
        if slot.is_some() {
            return Err(KextError::Busy);
        }
        let (Some(start), Some(_)) = (routine(ki as usize, false), routine(ki as usize, true))
        else {
            return Err(KextError::BadKmodInfo);
        };
        self.loaded.store(true, Ordering::Release);
        let _g = kernel_task(k);
        let depth = crate::stack::paint_for(crate::stack::ENTRY_BUDGET);
        let (r, used) = crate::stack::measure(depth, || {
            // SAFETY: the kext's start routine, called as OSKext does.
            context::with_frame(Frame::Callback, || unsafe {
                start(ki, std::ptr::null_mut())
            })
        });
        k.check_stack(Frame::Callback, crate::stack::ENTRY_BUDGET, used);
        if r != xnu::KERN_SUCCESS as i32 {
            self.loaded.store(false, Ordering::Release);
            self.check_clean(k, "a failed start");
            return Err(KextError::StartFailed(r));
        }
        *slot = Some(ki as usize);
        Ok(())
    }

    /// Unloads: calls stop(ki, NULL); a refusal keeps the kext loaded.
    pub fn unload(&self, k: &Kernel) -> Result<(), KextError> {
        let mut slot = lock(&self.info);
        let ki = slot.ok_or(KextError::NotLoaded)?;
        let stop = routine(ki, true).ok_or(KextError::BadKmodInfo)?;
        let _g = kernel_task(k);
        let depth = crate::stack::paint_for(crate::stack::ENTRY_BUDGET);
        let (r, used) = crate::stack::measure(depth, || {
            // SAFETY: the loaded kext's stop routine; stop gets data = NULL.
            context::with_frame(Frame::Callback, || unsafe {
                stop(ki as *mut xnu::kmod_info, std::ptr::null_mut())
            })
        });
        k.check_stack(Frame::Callback, crate::stack::ENTRY_BUDGET, used);
        if r != xnu::KERN_SUCCESS as i32 {
            k.log_line(format!("Kext did not stop ({r})"));
            return Err(KextError::StopRefused(r));
        }
        self.loaded.store(false, Ordering::Release);
        *slot = None;
        self.check_clean(k, "unload");
        check_left_kext_code(k);
        crate::foreign::check_unloaded(k);
        Ok(())
    }

    /// What a kext must not leave behind once its code is gone.
    fn check_clean(&self, k: &Kernel, when: &str) {
        let blocks = k.arena.kext_blocks();
        if !blocks.is_empty() {
            let bytes = blocks.iter().map(|(_, b)| b.size).sum();
            k.violation(Violation::LeakedAllocations {
                count: blocks.len(),
                bytes,
                what: blocks.iter().take(8).map(|(_, b)| b.what).collect(),
            });
        }
        for p in k.mac.policies() {
            k.violation(Violation::LeftRegistered(format!(
                "MAC policy {} (after {when})",
                p.name
            )));
        }
        for l in k.kauth.our_listeners() {
            k.violation(Violation::LeftRegistered(format!(
                "kauth listener on {} (after {when})",
                l.scope
            )));
        }
        for o in k.sysctl.oids() {
            k.violation(Violation::LeftRegistered(format!(
                "sysctl OID {} (after {when})",
                o.name
            )));
        }
        for fs in k.vfs.kext_fstypes() {
            k.violation(Violation::LeftRegistered(format!(
                "filesystem {fs} (after {when})"
            )));
        }
        for vp in k.vfs.all_vnodes() {
            let io = vp.kext_iocounts.load(Ordering::Acquire);
            let uc = vp.kext_refs.load(Ordering::Acquire);
            if io != 0 || uc != 0 {
                k.violation(Violation::UnbalancedCount(format!(
                    "kext left {io} iocount(s) and {uc} usecount(s) on {} (after {when})",
                    vp.path
                )));
            }
        }
    }
}

/// Once stop returned success the kext's code is unmapped: a thread still in
/// a hook would return into nothing. A short grace covers the few
/// instructions between a hook's in-flight decrement and its return.
const LEAVE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Reports threads that stay in kext code after a successful unload.
fn check_left_kext_code(k: &Kernel) {
    let start = std::time::Instant::now();
    while k.threads_in_kext() > 0 && start.elapsed() < LEAVE_GRACE {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let n = k.threads_in_kext();
    if n > 0 {
        k.violation(Violation::CallAfterUnload {
            what: format!("{n} thread(s) still executing kext code (hooks in flight) when its stop returned success"),
            addr: 0,
        });
    }
}

/// Runs the caller as a thread of kernel_task until the guard drops.
fn kernel_task(k: &Kernel) -> Option<crate::vm::Enter> {
    k.procs.get(0).map(|p| crate::vm::enter(k, &p))
}
