//! kauth scopes and listeners, including the documented unload race: the
//! dispatcher reads a listener's callback without the scope lock, so a call
//! can still arrive after `kauth_unlisten_scope` returned.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::context::Frame;
use crate::kernel::Kernel;
use crate::lock;
use crate::vfs::Vnode;
use crate::violation::Violation;
use crate::xnu;

/// Listeners a scope's table holds at most: KAUTH_SCOPE_MAX_LISTENERS,
/// bsd/kern/kern_authorization.c (15 in xnu-11417.121.6 and xnu-7195.141.2).
/// A full table makes `kauth_listen_scope` return NULL; a slot frees on
/// `kauth_unlisten_scope`.
pub const MAX_LISTENERS: usize = 15;

/// The scopes registered at boot (kauth_init: process, generic, fileop;
/// vnode_authorize_init: vnode). A listener for any other identifier waits
/// on `kauth_dangling_listeners`, which has no limit, and is never called
/// until that scope is registered (kauth_listen_scope, xnu-11417.121.6).
pub const BOOT_SCOPES: [&str; 4] = [
    "com.apple.kauth.process",
    "com.apple.kauth.generic",
    "com.apple.kauth.fileop",
    "com.apple.kauth.vnode",
];

/// One listener.
#[derive(Clone, Debug)]
pub struct Listener {
    /// The `kauth_listener_t` handle.
    pub handle: usize,
    /// Scope identifier.
    pub scope: String,
    /// Callback address.
    pub callback: usize,
    /// `idata`.
    pub idata: usize,
    /// Registered by the kext under test (through the KPI); false for
    /// another kext's listener (`listen_other`), whose code stays loaded
    /// when ours goes.
    pub ours: bool,
}

/// The kauth subsystem.
#[derive(Default)]
pub struct Kauth {
    listeners: Mutex<Vec<Listener>>,
    in_window: AtomicUsize,
}

type Callback = unsafe extern "C" fn(
    xnu::kauth_cred_t,
    *mut std::ffi::c_void,
    xnu::kauth_action_t,
    usize,
    usize,
    usize,
    usize,
) -> i32;

impl Kauth {
    /// kauth_listen_scope, called by the kext under test.
    pub fn listen(&self, k: &Kernel, scope: &str, callback: usize, idata: usize) -> usize {
        k.kext_image.note(callback);
        k.kext_image.note(idata);
        self.add(k, scope, callback, idata, true)
    }

    /// kauth_listen_scope, called by another loaded kext: it shares the
    /// scope's table (`MAX_LISTENERS`) and its callbacks run whether or not
    /// ours is loaded.
    pub fn listen_other(&self, k: &Kernel, scope: &str, callback: usize, idata: usize) -> usize {
        self.add(k, scope, callback, idata, false)
    }

    fn add(&self, k: &Kernel, scope: &str, callback: usize, idata: usize, ours: bool) -> usize {
        let mut l = lock(&self.listeners);
        // kauth_add_callback_to_scope: ENOSPC when all slots are taken, and
        // kauth_listen_scope then frees the listener and returns NULL.
        if BOOT_SCOPES.contains(&scope)
            && l.iter().filter(|x| x.scope == scope).count() >= MAX_LISTENERS
        {
            return 0;
        }
        let handle = k.kalloc(32, "kauth_listener");
        l.push(Listener {
            handle,
            scope: scope.to_string(),
            callback,
            idata,
            ours,
        });
        handle
    }

    /// kauth_unlisten_scope; `None` when the handle is unknown, else whether
    /// the listener was ours.
    pub fn unlisten(&self, handle: usize) -> Option<bool> {
        let mut l = lock(&self.listeners);
        let at = l.iter().position(|x| x.handle == handle)?;
        Some(l.remove(at).ours)
    }

    /// Threads that copied a callback and wait in the race window
    /// (`Config::kauth_race_delay`) before calling it.
    pub fn in_race_window(&self) -> usize {
        self.in_window.load(Ordering::Acquire)
    }

    /// Listeners still registered, ours and other kexts'.
    pub fn listeners(&self) -> Vec<Listener> {
        lock(&self.listeners).clone()
    }

    /// Our kext's listeners still registered.
    pub fn our_listeners(&self) -> Vec<Listener> {
        lock(&self.listeners)
            .iter()
            .filter(|l| l.ours)
            .cloned()
            .collect()
    }

    /// kauth_authorize_action: every listener of `scope`, combined. Its
    /// callers are file operations (vnode_authorize in open and exec, the
    /// fileop notifications): see `context::in_file_operation`.
    pub fn authorize(
        &self,
        k: &Kernel,
        scope: &str,
        cred: usize,
        action: i32,
        args: [usize; 4],
    ) -> i32 {
        crate::context::in_file_operation("kauth_authorize_action", || {
            self.authorize_listeners(k, scope, cred, action, args)
        })
    }

    fn authorize_listeners(
        &self,
        k: &Kernel,
        scope: &str,
        cred: usize,
        action: i32,
        args: [usize; 4],
    ) -> i32 {
        // RACE: like kauth_authorize_action, callbacks are copied and then
        // called without the scope lock.
        let snapshot: Vec<Listener> = lock(&self.listeners)
            .iter()
            .filter(|x| x.scope == scope && x.callback != 0)
            .cloned()
            .collect();
        let mut result = xnu::KAUTH_RESULT_DEFER as i32;
        for l in snapshot {
            if !k.config.kauth_race_delay.is_zero() {
                self.in_window.fetch_add(1, Ordering::AcqRel);
                std::thread::sleep(k.config.kauth_race_delay);
                self.in_window.fetch_sub(1, Ordering::AcqRel);
            }
            if l.ours && !k.kext.is_loaded() {
                k.violation(Violation::CallAfterUnload {
                    what: format!("kauth listener on {}", l.scope),
                    addr: l.callback as u64,
                });
                continue;
            }
            // SAFETY: `callback` is the kauth_scope_callback_t a loaded kext
            // registered (ours is checked above; another stays loaded).
            let f: Callback = unsafe { std::mem::transmute(l.callback) };
            let call = || {
                // SAFETY: arguments follow the scope's documented shape.
                unsafe {
                    f(
                        cred as _,
                        l.idata as _,
                        action,
                        args[0],
                        args[1],
                        args[2],
                        args[3],
                    )
                }
            };
            let r = if l.ours {
                k.kext_call(Frame::Callback, call)
            } else {
                call()
            };
            let deny = r == xnu::KAUTH_RESULT_DENY as i32;
            if deny
                || (r == xnu::KAUTH_RESULT_ALLOW as i32 && result == xnu::KAUTH_RESULT_DEFER as i32)
            {
                result = r;
            }
        }
        result
    }

    /// vnode_authorize → KAUTH_SCOPE_VNODE (arg0 ctx, arg1 vp, arg2 dvp, arg3 &error).
    pub fn authorize_vnode(
        &self,
        k: &Kernel,
        cred: usize,
        ctx: usize,
        vp: &Vnode,
        action: i32,
    ) -> i32 {
        let mut error: i32 = 0;
        let errp = (&raw mut error) as usize;
        self.authorize(
            k,
            "com.apple.kauth.vnode",
            cred,
            action,
            [ctx, vp.addr, 0, errp],
        )
    }

    /// KAUTH_SCOPE_FILEOP notification (arg0 vp, arg1 path, arg2 flags).
    pub fn fileop(
        &self,
        k: &Kernel,
        cred: usize,
        action: i32,
        vp: usize,
        path: &str,
        flags: usize,
    ) {
        if lock(&self.listeners)
            .iter()
            .all(|l| l.scope != "com.apple.kauth.fileop")
        {
            return;
        }
        let buf = k.kalloc(path.len() + 1, "fileop path");
        crate::vfs::copy_cstr(path, buf, path.len() + 1);
        self.authorize(
            k,
            "com.apple.kauth.fileop",
            cred,
            action,
            [vp, buf, flags, 0],
        );
        k.arena.free(buf);
    }
}
