//! `lck_*` KPIs: groups, attributes, mutexes and spinlocks.

use std::ffi::{CStr, c_char};

use super::{k, may_block};
use crate::locks::LockObj;
use crate::xnu;

#[unsafe(no_mangle)]
extern "C" fn lck_grp_attr_alloc_init() -> *mut xnu::lck_grp_attr_t {
    let k = k("lck_grp_attr_alloc_init");
    k.locks.alloc(&k, LockObj::GroupAttr, "lck_grp_attr") as *mut xnu::lck_grp_attr_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_grp_attr_free(attr: *mut xnu::lck_grp_attr_t) {
    let k = k("lck_grp_attr_free");
    k.locks.free(&k, attr as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_grp_alloc_init(
    name: *const c_char,
    _attr: *mut xnu::lck_grp_attr_t,
) -> *mut xnu::lck_grp_t {
    let k = k("lck_grp_alloc_init");
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: the group name is a C string.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    k.locks.alloc(&k, LockObj::Group(name), "lck_grp") as *mut xnu::lck_grp_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_grp_free(grp: *mut xnu::lck_grp_t) {
    let k = k("lck_grp_free");
    k.locks.free(&k, grp as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_alloc_init(
    _grp: *mut xnu::lck_grp_t,
    _attr: *mut xnu::lck_attr_t,
) -> *mut xnu::lck_mtx_t {
    let k = k("lck_mtx_alloc_init");
    may_block(&k, "lck_mtx_alloc_init");
    k.locks
        .alloc(&k, LockObj::Mutex(Default::default()), "lck_mtx") as *mut xnu::lck_mtx_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_lock(l: *mut xnu::lck_mtx_t) {
    let k = k("lck_mtx_lock");
    k.locks.mtx_lock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_unlock(l: *mut xnu::lck_mtx_t) {
    let k = k("lck_mtx_unlock");
    k.locks.mtx_unlock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_mtx_free(l: *mut xnu::lck_mtx_t, _grp: *mut xnu::lck_grp_t) {
    let k = k("lck_mtx_free");
    k.locks.free(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_alloc_init(
    _grp: *mut xnu::lck_grp_t,
    _attr: *mut xnu::lck_attr_t,
) -> *mut xnu::lck_spin_t {
    let k = k("lck_spin_alloc_init");
    may_block(&k, "lck_spin_alloc_init");
    k.locks
        .alloc(&k, LockObj::Spin(Default::default()), "lck_spin") as *mut xnu::lck_spin_t
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_lock(l: *mut xnu::lck_spin_t) {
    let k = k("lck_spin_lock");
    k.locks.spin_lock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_unlock(l: *mut xnu::lck_spin_t) {
    let k = k("lck_spin_unlock");
    k.locks.spin_unlock(&k, l as usize);
}

#[unsafe(no_mangle)]
extern "C" fn lck_spin_free(l: *mut xnu::lck_spin_t, _grp: *mut xnu::lck_grp_t) {
    let k = k("lck_spin_free");
    k.locks.free(&k, l as usize);
}
