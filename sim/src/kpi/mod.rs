//! The KPI functions the kext imports, exported with their C names. Each one
//! translates to a kernel method; none unwinds (violations are recorded and
//! reported at the next safe point).
//!
//! This file holds what every KPI call shares (the kernel handle, the vnode
//! check, the may-block check); the KPIs live in rooms by subject: `vnode`
//! (vnodes, mounts, filesystems), `upl`, `proc` (processes, creds,
//! contexts), `register` (kauth, MAC, sysctl), `memory` (IOMalloc, IOLog,
//! panic), `locks` and `time` (time, CPUs, threads, random).

use crate::context::{self};
use crate::kernel::{Kernel, current_or_abort};
use crate::vfs::Vnode;
use crate::violation::Violation;
use crate::xnu;

mod locks;
mod memory;
mod proc;
mod register;
mod time;
mod upl;
mod vnode;

/// The booted kernel, for one KPI call: while the returned handle lives,
/// the stack below is the kernel's, not the calling kext's (`stack`).
fn k(kpi: &str) -> KpiKernel {
    KpiKernel {
        _scope: crate::stack::KernelScope::enter(),
        k: current_or_abort(kpi),
    }
}

/// The kernel handle of one KPI call (see [`k`]).
struct KpiKernel {
    _scope: crate::stack::KernelScope,
    k: std::sync::Arc<Kernel>,
}

impl std::ops::Deref for KpiKernel {
    type Target = std::sync::Arc<Kernel>;
    fn deref(&self) -> &Self::Target {
        &self.k
    }
}

/// The vnode at `vp`, or a recorded panic for a bad pointer.
fn vnode(k: &Kernel, kpi: &str, vp: xnu::vnode_t) -> Option<crate::vfs::Found<Vnode>> {
    let v = k.vfs.vnode(vp as usize);
    if v.is_none() {
        k.violation(Violation::KernelPanic(format!(
            "{kpi}: {:#x} is not a vnode",
            vp as usize
        )));
    }
    v
}

/// Checks for calls that may block: not in a pagein hook, not under a spinlock.
fn may_block(k: &Kernel, kpi: &str) {
    if context::in_pagein_hook() {
        k.violation(Violation::SleepInPagein(kpi.to_string()));
    }
    if context::spins_held() > 0 {
        k.violation(Violation::SpinlockHeld(kpi.to_string()));
    }
}
