//! maptrace-sim: a multi-threaded model of the XNU pieces the maptrace kext
//! touches, so the real C shim and the real Rust core run on Linux.
//!
//! Start with [`Sim::boot`]; see `sim/README.md` for the model, the API and
//! the scenario language.
//!
//! ```
//! use maptrace_sim::{Config, Sim, TraceOp, map_flags, prot};
//!
//! let sim = Sim::boot(Config::default());
//! sim.mount("apfs", "/").unwrap();
//! sim.add_file("/db", 64 << 10).unwrap();
//! let p = sim.spawn("reader", 501);
//! let fd = p.open("/db").unwrap();
//! let a = p.mmap(fd, 64 << 10, prot::READ, map_flags::SHARED, 0).unwrap();
//! let b = p.mmap(fd, 64 << 10, prot::READ, map_flags::SHARED, 0).unwrap();
//! assert_eq!(sim.counts("/db").unwrap().usecount, 2); // the open + one mapping reference
//! assert_eq!(p.touch(a, 4096).unwrap().pageins, 1);
//! assert_eq!(p.touch(b, 4096).unwrap().pageins, 0); // one page cache per file
//! p.munmap(a).unwrap();
//! p.munmap(b).unwrap();
//! let mnomaps = sim.trace().iter().filter(|e| e.op == TraceOp::Mnomap).count();
//! assert_eq!(mnomaps, 1); // once, at the last unmap
//! ```

// The shim's C files call mt_core_*; linking the core makes them resolve.
use maptrace_core as _;

mod api;
pub mod arena;
pub mod context;
mod corewatch;
pub mod foreign;
mod guard;
pub mod hold;
mod in_kext;
pub mod kauth;
pub mod kernel;
pub mod kext;
pub mod kext_image;
mod kpi;
pub mod locks;
pub mod mac;
pub mod scenario;
pub mod stack;
pub mod sysctl;
pub mod upl;
pub mod vfs;
pub mod violation;
pub mod vm;
pub mod xnu;

pub use api::{
    Cred, DirectVnode, Proc, SHIM_LINKED, SHIM_RESIDENT, SHIM_WITH_KAUTH, Sim, SimError,
    VnodeCounts,
};
pub use context::Vop;
pub use foreign::ForeignHook;
pub use hold::{CopyoutHold, MacRegisterHold, VnopHold};
pub use kernel::{Config, Platform, Release, TraceEvent, TraceOp};
pub use kext::KextError;
pub use scenario::{DEMO, GenParams, RingSize, Scenario, Step};
pub use sysctl::SysctlError;
pub use violation::{Violation, ViolationPolicy};
pub use vm::{OpenMode, TouchStats, VmObject, map_flags, prot};

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks a mutex, ignoring poison: a test that failed on one thread must not
/// turn every later lock into a second failure.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks, ignoring poison.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks, ignoring poison.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
