//! Freed vectors made inaccessible: `vfs_fsremove` gives a filesystem's
//! vector back to the zone allocator (bsd/vfs/kpi_vfs.c `kfree_type`,
//! xnu-11417.121.6), whose page may then be unmapped; any later access,
//! even the read of a failed compare-and-swap, is a kernel page fault. The
//! simulator protects the page of such a vector (`PROT_NONE`) until it is
//! reused; a fault on it ends the test process with the rule's name
//! (`vfs_fsremove.vector_freed`), as a kernel would panic.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size of a guarded vector's block: one page of its own.
pub const GUARD_PAGE: usize = 4096;

/// Guarded pages (0: free slot); read by the signal handler.
static PAGES: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
static HANDLER: Once = Once::new();

#[cfg(unix)]
extern "C" fn on_segv(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let info = unsafe { &*info };
    // SAFETY: a SIGSEGV/SIGBUS siginfo carries the fault address.
    let addr = unsafe { info.si_addr() } as usize;
    let page = addr & !(GUARD_PAGE - 1);
    if PAGES.iter().any(|p| p.load(Ordering::Relaxed) == page) {
        let mut msg = *b"maptrace-sim: VIOLATION: XNU contract vfs_fsremove.vector_freed broken: \
access to a vnode-op vector vfs_fsremove freed, at 0x0000000000000000\n";
        let hex = b"0123456789abcdef";
        let end = msg.len() - 1;
        for i in 0..16 {
            msg[end - 1 - i] = hex[(addr >> (4 * i)) & 0xf];
        }
        // SAFETY: write(2) is async-signal-safe; `msg` is a live buffer.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(101) };
    }
    // Not ours: the default action, on return the fault repeats.
    // SAFETY: resetting a signal's disposition is async-signal-safe.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// Makes the guarded vector page at `addr` inaccessible.
pub(crate) fn protect(addr: usize) {
    #[cfg(unix)]
    {
        HANDLER.call_once(|| {
            // SAFETY: an all-zero sigaction is a valid value.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_segv as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            for sig in [libc::SIGSEGV, libc::SIGBUS] {
                // SAFETY: installs the SA_SIGINFO handler above.
                unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
            }
        });
        if let Some(slot) = PAGES.iter().find(|p| {
            p.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) {
            let _ = slot;
            // SAFETY: `addr` is a page-aligned page of the arena that only
            // the freed vector occupies.
            unsafe { libc::mprotect(addr as *mut libc::c_void, GUARD_PAGE, libc::PROT_NONE) };
        }
    }
}

/// Makes the page at `addr` accessible again (the vector is reused).
pub(crate) fn unprotect(addr: usize) {
    #[cfg(unix)]
    {
        // SAFETY: the page `protect` protected.
        unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                GUARD_PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        for p in &PAGES {
            let _ = p.compare_exchange(addr, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}
