//! The simulator's exported KPIs and data symbols that the contract,
//! detector and service tests call directly, as the kext would: declared
//! once here, with the C signatures of `kext-shim/src/xnu/mt_xnu.h`.

#![allow(
    dead_code,
    reason = "each test binary calls a different part of the list"
)]

use std::ffi::{c_char, c_int, c_void};

use maptrace_sim::xnu;

unsafe extern "C" {
    pub static mut sysctl__kern_children: xnu::sysctl_oid_list;
    pub static mut vnop_pagein_desc: xnu::vnodeop_desc;
    pub static mut vnop_mmap_desc: xnu::vnodeop_desc;
    pub static mut vnop_default_desc: xnu::vnodeop_desc;
    pub static mut vnop_reclaim_desc: xnu::vnodeop_desc;
    pub fn IOFree(p: *mut c_void, size: usize);
    pub fn IOMalloc(size: usize) -> *mut c_void;
    pub fn IOSleep(ms: u32);
    pub fn cpu_number() -> c_int;
    pub fn kauth_listen_scope(
        id: *const c_char,
        cb: xnu::kauth_scope_callback_t,
        idata: *mut c_void,
    ) -> xnu::kauth_listener_t;
    pub fn kauth_unlisten_scope(l: xnu::kauth_listener_t);
    pub fn lck_grp_alloc_init(
        name: *const c_char,
        attr: *mut xnu::lck_grp_attr_t,
    ) -> *mut xnu::lck_grp_t;
    pub fn lck_grp_free(g: *mut xnu::lck_grp_t);
    pub fn lck_spin_alloc_init(
        g: *mut xnu::lck_grp_t,
        a: *mut xnu::lck_attr_t,
    ) -> *mut xnu::lck_spin_t;
    pub fn lck_spin_free(l: *mut xnu::lck_spin_t, g: *mut xnu::lck_grp_t);
    pub fn lck_spin_lock(l: *mut xnu::lck_spin_t);
    pub fn lck_spin_unlock(l: *mut xnu::lck_spin_t);
    pub fn mac_policy_register(c: *mut xnu::mac_policy_conf, h: *mut u32, xd: *mut c_void)
    -> c_int;
    pub fn mac_policy_unregister(h: u32) -> c_int;
    pub fn proc_suser(p: xnu::proc_t) -> c_int;
    pub fn sysctl_handle_opaque(
        o: *mut xnu::sysctl_oid,
        a1: *mut c_void,
        a2: c_int,
        r: *mut xnu::sysctl_req,
    ) -> c_int;
    pub fn sysctl_register_oid(o: *mut xnu::sysctl_oid);
    pub fn sysctl_unregister_oid(o: *mut xnu::sysctl_oid);
    pub fn ubc_upl_abort_range(upl: xnu::upl_t, off: u32, size: u32, flags: c_int) -> c_int;
    pub fn vfs_fsadd(vfe: *mut xnu::vfs_fsentry, h: *mut xnu::vfstable_t) -> c_int;
    pub fn vfs_fsremove(h: xnu::vfstable_t) -> c_int;
    pub fn vfs_iterate(
        flags: c_int,
        callout: Option<unsafe extern "C" fn(*mut xnu::mount, *mut c_void) -> c_int>,
        arg: *mut c_void,
    ) -> c_int;
    pub fn vn_default_error() -> c_int;
    pub fn vn_getpath(vp: *mut xnu::vnode, buf: *mut c_char, len: *mut c_int) -> c_int;
    pub fn vnode_create(flavor: u32, size: u32, data: *mut c_void, vpp: *mut xnu::vnode_t)
    -> c_int;
    pub fn vnode_getwithref(vp: xnu::vnode_t) -> c_int;
    pub fn vnode_iterate(
        mp: xnu::mount_t,
        flags: c_int,
        callout: Option<unsafe extern "C" fn(*mut xnu::vnode, *mut c_void) -> c_int>,
        arg: *mut c_void,
    ) -> c_int;
    pub fn vnode_put(vp: xnu::vnode_t) -> c_int;
    pub fn vnode_recycle(vp: xnu::vnode_t) -> c_int;
    pub fn vnode_ref(vp: xnu::vnode_t) -> c_int;
    pub fn vnode_rele(vp: xnu::vnode_t);
}
