/*
 * mt_kauth.c - the optional KAUTH_SCOPE_VNODE listener, used only to
 * discover vnodes (and so their vnode-op vectors) as they are authorised.
 *
 * Role: kauth_listen_scope is deprecated (and unloadable on macOS 11+), so
 * the listener is a tunable (mt_tunable_kauth). It never decides anything:
 * it always returns KAUTH_RESULT_DEFER. kauth_unlisten_scope does not wait
 * for callbacks already running, so each one counts itself in flight and
 * stop waits for the count to drain.
 *
 * Calls no mt_core_* function directly (mt_vnode_seen does).
 */
#include "mt_shim.h"

/**
 * The vnode-scope callback: arg1 is the vnode being authorised.
 * @param cred   the requester's credential (unused).
 * @param idata  unused.
 * @param action KAUTH_VNODE_* bits (unused).
 * @param arg0   the vfs_context (unused).
 * @param arg1   the vnode.
 * @return KAUTH_RESULT_DEFER, always: fail open, never decide.
 * Context: thread context of the requesting process; may block only on
 *          the patch lock, the first time a vector is seen.
 */
static int mt_kauth_vnode_cb(kauth_cred_t cred, void *idata, kauth_action_t action,
                             uintptr_t arg0, uintptr_t arg1, uintptr_t arg2, uintptr_t arg3)
{
    (void)cred;
    (void)idata;
    (void)action;
    (void)arg0;
    (void)arg2;
    (void)arg3;
    mt_enter();
    mt_vnode_seen((vnode_t)arg1);
    mt_leave();
    return KAUTH_RESULT_DEFER;
}

/**
 * Registers the listener (the callback pointer is taken here, in code).
 * @return 0, or ENOMEM when kauth refused.
 * Context: thread context (start); may block.
 */
int mt_kauth_start(void)
{
    mt_g.kauth_listener = kauth_listen_scope(KAUTH_SCOPE_VNODE, mt_kauth_vnode_cb, NULL);
    return mt_g.kauth_listener == NULL ? ENOMEM : 0;
}

/**
 * Removes the listener if registered. Callbacks already running finish on
 * their own; stop waits for them through the in-flight count.
 * Context: thread context (stop); may block.
 */
void mt_kauth_stop(void)
{
    if (mt_g.kauth_listener != NULL) {
        kauth_unlisten_scope(mt_g.kauth_listener);
        mt_g.kauth_listener = NULL;
    }
}
