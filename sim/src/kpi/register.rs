//! Registration KPIs: kauth listeners, MAC policies, sysctl OIDs.

use std::ffi::{CStr, c_char, c_int, c_void};

use super::k;
use crate::violation::Violation;
use crate::xnu;

#[unsafe(no_mangle)]
extern "C" fn kauth_listen_scope(
    identifier: *const c_char,
    callback: xnu::kauth_scope_callback_t,
    idata: *mut c_void,
) -> xnu::kauth_listener_t {
    let k = k("kauth_listen_scope");
    if identifier.is_null() {
        // kauth_listen_scope strncmp()s the identifier against every scope
        // (bsd/kern/kern_authorization.c): NULL faults.
        k.violation(Violation::Contract {
            rule: "kauth_listen_scope.identifier_nonnull",
            detail: "kauth_listen_scope(NULL, ...)".into(),
        });
        return std::ptr::null_mut();
    }
    // A NULL callback is accepted and never called (the dispatcher skips
    // slots without kll_callback).
    let cb = callback.map_or(0, |f| f as usize);
    // SAFETY: the scope identifier is a C string.
    let scope = unsafe { CStr::from_ptr(identifier) }
        .to_string_lossy()
        .into_owned();
    k.kauth.listen(&k, &scope, cb, idata as usize) as xnu::kauth_listener_t
}

#[unsafe(no_mangle)]
extern "C" fn kauth_unlisten_scope(listener: xnu::kauth_listener_t) {
    let k = k("kauth_unlisten_scope");
    match k.kauth.unlisten(listener as usize) {
        None => k.violation(Violation::KernelPanic(format!(
            "kauth_unlisten_scope: unknown listener {:#x}",
            listener as usize
        ))),
        // kauth_unlisten_scope frees whatever handle it is given
        // (bsd/kern/kern_authorization.c, xnu-11417.121.6): the kext that
        // registered it frees it again later.
        Some(false) => k.violation(Violation::Contract {
            rule: "kauth_unlisten_scope.own_listener",
            detail: format!(
                "kauth_unlisten_scope({:#x}): another kext's listener",
                listener as usize
            ),
        }),
        Some(true) => {}
    }
}

#[unsafe(no_mangle)]
extern "C" fn mac_policy_register(
    mpc: *mut xnu::mac_policy_conf,
    handlep: *mut xnu::mac_policy_handle_t,
    _xd: *mut c_void,
) -> c_int {
    let k = k("mac_policy_register");
    crate::hold::enter_mac_register();
    if let Some(e) = k.config.mac_register_error {
        return e;
    }
    match k.mac.register(&k, mpc as usize) {
        Ok(h) => {
            if !handlep.is_null() {
                // SAFETY: the caller's out-pointer.
                unsafe { *handlep = h };
            }
            0
        }
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
extern "C" fn mac_policy_unregister(handle: xnu::mac_policy_handle_t) -> c_int {
    let k = k("mac_policy_unregister");
    match k.mac.unregister(&k, handle) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
extern "C" fn sysctl_register_oid(oidp: *mut xnu::sysctl_oid) {
    let k = k("sysctl_register_oid");
    k.sysctl.register(&k, oidp as usize);
}

#[unsafe(no_mangle)]
extern "C" fn sysctl_unregister_oid(oidp: *mut xnu::sysctl_oid) {
    let k = k("sysctl_unregister_oid");
    k.sysctl.unregister(&k, oidp as usize);
}
