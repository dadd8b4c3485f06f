/*
 * mt_kauth.c - the KAUTH_SCOPE_VNODE listener of the kauth build variant
 * (-DMT_WITH_KAUTH, macOS 10.15), used only to discover vnodes (and so
 * their vnode-op vectors) as they are authorised.
 *
 * Role: kauth_listen_scope is __kpi_deprecated and unsupported from macOS
 * 11 (a kext importing it does not load there), so the default build
 * compiles nothing here and imports neither symbol (mt_shim.h). In the
 * kauth variant the listener is also a tunable (mt_tunable_kauth). It never
 * decides anything: it always returns KAUTH_RESULT_DEFER. kauth_unlisten_scope does not wait
 * for callbacks already running, so each one counts itself in flight and
 * stop waits for the count to drain.
 *
 * Calls no mt_core_* function directly (mt_vnode_seen does).
 */
#include "mt_shim.h"

#ifdef MT_WITH_KAUTH

/* Register the listener at start (read once there). */
uint32_t mt_tunable_kauth = 1;

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
    uint32_t slot = mt_enter();
    mt_vnode_seen((vnode_t)arg1);
    mt_leave(slot);
    return KAUTH_RESULT_DEFER;
}

/**
 * Registers the listener (the callback pointer is taken here, in code),
 * unless the tunable is off or it is already registered.
 * @return 0, or ENOMEM when kauth refused.
 * Context: thread context (start); may block.
 */
int mt_kauth_start(void)
{
    if (mt_tunable_kauth == 0 || mt_g.kauth_listener != NULL) {
        return 0;
    }
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

#endif /* MT_WITH_KAUTH */
