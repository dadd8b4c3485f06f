//! `lck_*` objects: groups, mutexes (sleeping) and spinlocks, with the misuse
//! a kernel punishes (recursion, foreign unlock, sleeping under a spinlock,
//! a mutex in a pagein hook) reported as violations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::arena::Owner;
use crate::context;
use crate::kernel::Kernel;
use crate::lock;
use crate::violation::Violation;

/// A sleeping mutex.
#[derive(Debug, Default)]
pub struct Mtx {
    owner: Mutex<u64>,
    cv: Condvar,
}

/// A spinlock.
#[derive(Debug, Default)]
pub struct Spin {
    owner: AtomicU64,
}

/// A lock object by kind.
#[derive(Clone, Debug)]
pub enum LockObj {
    /// lck_grp_t.
    Group(String),
    /// lck_grp_attr_t.
    GroupAttr,
    /// lck_mtx_t.
    Mutex(Arc<Mtx>),
    /// lck_spin_t.
    Spin(Arc<Spin>),
}

/// Every live lock object, by address.
#[derive(Default)]
pub struct Locks {
    objs: Mutex<HashMap<usize, LockObj>>,
}

impl Locks {
    /// Allocates an object (kext memory: it must be freed before unload).
    pub fn alloc(&self, k: &Kernel, obj: LockObj, what: &'static str) -> usize {
        let Some(addr) = k.arena.alloc(64, 16, true, Owner::Kext, what) else {
            return 0;
        };
        lock(&self.objs).insert(addr, obj);
        addr
    }

    /// Frees an object; false when `addr` was not one.
    pub fn free(&self, k: &Kernel, addr: usize) -> bool {
        let Some(obj) = lock(&self.objs).remove(&addr) else {
            k.violation(Violation::LockMisuse(format!(
                "free of unknown lock object {addr:#x}"
            )));
            return false;
        };
        let held = match &obj {
            LockObj::Mutex(m) => *lock(&m.owner) != 0,
            LockObj::Spin(s) => s.owner.load(Ordering::Acquire) != 0,
            _ => false,
        };
        if held {
            k.violation(Violation::LockMisuse(format!(
                "lock {addr:#x} freed while held"
            )));
        }
        k.arena.free(addr);
        true
    }

    fn get(&self, addr: usize) -> Option<LockObj> {
        lock(&self.objs).get(&addr).cloned()
    }

    /// lck_mtx_lock.
    pub fn mtx_lock(&self, k: &Kernel, addr: usize) {
        let Some(LockObj::Mutex(m)) = self.get(addr) else {
            k.violation(Violation::LockMisuse(format!(
                "lck_mtx_lock on {addr:#x}, not a mutex"
            )));
            return;
        };
        if context::in_pagein_hook() {
            k.violation(Violation::SleepInPagein("lck_mtx_lock".into()));
        }
        if context::spins_held() > 0 {
            k.violation(Violation::SpinlockHeld("lck_mtx_lock (may block)".into()));
        }
        let me = k.identity().tid;
        let mut owner = lock(&m.owner);
        if *owner == me {
            k.violation(Violation::LockMisuse(format!(
                "lck_mtx_lock: recursive lock of {addr:#x}"
            )));
            return;
        }
        while *owner != 0 {
            owner = m.cv.wait(owner).unwrap_or_else(|e| e.into_inner());
        }
        *owner = me;
    }

    /// lck_mtx_unlock.
    pub fn mtx_unlock(&self, k: &Kernel, addr: usize) {
        let Some(LockObj::Mutex(m)) = self.get(addr) else {
            k.violation(Violation::LockMisuse(format!(
                "lck_mtx_unlock on {addr:#x}, not a mutex"
            )));
            return;
        };
        let me = k.identity().tid;
        let mut owner = lock(&m.owner);
        if *owner != me {
            k.violation(Violation::LockMisuse(format!(
                "lck_mtx_unlock of {addr:#x} by a thread that does not own it"
            )));
            return;
        }
        *owner = 0;
        m.cv.notify_one();
    }

    /// lck_spin_lock.
    pub fn spin_lock(&self, k: &Kernel, addr: usize) {
        let Some(LockObj::Spin(s)) = self.get(addr) else {
            k.violation(Violation::LockMisuse(format!(
                "lck_spin_lock on {addr:#x}, not a spinlock"
            )));
            return;
        };
        let me = k.identity().tid;
        if s.owner.load(Ordering::Acquire) == me {
            k.violation(Violation::LockMisuse(format!(
                "lck_spin_lock: {addr:#x} already held by this thread"
            )));
            return;
        }
        while s
            .owner
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        context::spin_adjust(1);
    }

    /// lck_spin_unlock.
    pub fn spin_unlock(&self, k: &Kernel, addr: usize) {
        let Some(LockObj::Spin(s)) = self.get(addr) else {
            k.violation(Violation::LockMisuse(format!(
                "lck_spin_unlock on {addr:#x}, not a spinlock"
            )));
            return;
        };
        let me = k.identity().tid;
        if s.owner
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            k.violation(Violation::LockMisuse(format!(
                "lck_spin_unlock of {addr:#x} by a thread that does not own it"
            )));
            return;
        }
        context::spin_adjust(-1);
    }

    /// Live lock objects (for unload reports).
    pub fn live(&self) -> usize {
        lock(&self.objs).len()
    }
}
