/*
 * mt_sysctl.c - kern.maptrace.{abi,stats,config,events} (docs/ARCHITECTURE.md section 4).
 *
 * Role: the userspace contract. Every read and every write of every leaf
 * is root only, checked first in each handler with proc_suser(req->p)
 * (CTLFLAG_ANYBODY covers writes only, so reads need the handler's check):
 * even the counters are a side channel on other users' file activity.
 * events drains one batch:
 * assembled into the staging buffer under the reader mutex, copied out
 * with SYSCTL_OUT (no spinlock held), then committed, or aborted when the
 * copy failed so nothing is lost. The OIDs are writable and filled in code
 * at start (handlers are function pointers the kernel calls).
 *
 * Calls: mt_core_drain_prepare, mt_core_drain_commit, mt_core_drain_abort,
 *        mt_core_config_get, mt_core_config_set, mt_core_stats.
 */
#include "mt_shim.h"

static struct sysctl_oid_list mt_sysctl_children;
static struct sysctl_oid mt_oid_node;
static struct sysctl_oid mt_oid_abi;
static struct sysctl_oid mt_oid_stats;
static struct sysctl_oid mt_oid_config;
static struct sysctl_oid mt_oid_events;

/*
 * Handlers running in the shim, and whether stop is closing the sysctls.
 * XNU's sysctl_unregister_oid sleeps THREAD_UNINT until the OID's running
 * handlers return (bsd/kern/kern_newsysctl.c, xnu-11417.121.6), and kmod
 * stop runs under OSKext's sKextLock (OSKext::removeKextWithIdentifier,
 * libkern/c++/OSKext.cpp): a reader stuck in copyout (its buffer on a
 * hung NFS or FUSE mapping) would hang the unload, and every kext load and
 * unload behind it, for good. So stop first closes the door and waits,
 * bounded, for the handlers inside, and refuses to unload if one stays.
 * Invariant: mt_sysctl_inside counts handlers between mt_sysctl_enter and
 * mt_sysctl_leave. A handler counts itself before it reads the flag and
 * stop sets the flag before it reads the count (both seq_cst), so either
 * the handler sees the flag and leaves at once, or stop sees the handler.
 */
static uint32_t mt_sysctl_inside;
static uint32_t mt_sysctl_closing;
/* How often stop looks at the handlers inside while it waits. */
#define MT_SYSCTL_POLL_MS 10

/**
 * Counts a handler in.
 * @return 1, or 0 when stop is closing the sysctls (the handler has then
 *         left again and returns ENOENT, as once the OIDs are gone).
 * Context: thread context of sysctl(2); never blocks.
 */
static int mt_sysctl_enter(void)
{
    __atomic_fetch_add(&mt_sysctl_inside, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&mt_sysctl_closing, __ATOMIC_SEQ_CST)) {
        __atomic_fetch_sub(&mt_sysctl_inside, 1, __ATOMIC_RELEASE);
        return 0;
    }
    return 1;
}

/**
 * Counts a handler out; passes its result through.
 * Context: thread context of sysctl(2); never blocks.
 */
static int mt_sysctl_leave(int err)
{
    __atomic_fetch_sub(&mt_sysctl_inside, 1, __ATOMIC_RELEASE);
    return err;
}

#pragma mark - handlers

/**
 * The credential check every handler makes first, before any size query.
 * @return 0 for root, EPERM for anyone else.
 * Context: thread context of sysctl(2).
 */
static int mt_sysctl_require_root(struct sysctl_req *req)
{
    return proc_suser(req->p) != 0 ? EPERM : 0;
}

/**
 * kern.maptrace.abi: the uint32_t MT_ABI_VERSION (root only).
 * @return 0, EPERM (not root, or a write), or SYSCTL_OUT's error.
 * Context: thread context of sysctl(2); may block in copyout.
 */
static int mt_sysctl_abi_in(struct sysctl_req *req)
{
    if (mt_sysctl_require_root(req) != 0 || req->newptr != 0) {
        return EPERM;
    }
    uint32_t v = MT_ABI_VERSION;
    return SYSCTL_OUT(req, &v, sizeof(v));
}

/**
 * kern.maptrace.stats: the core's stats with the shim's counters (root
 * only: the counters reveal other users' file activity).
 * @return 0, EPERM (not root, or a write), ENOMEM, or SYSCTL_OUT's error.
 * Context: thread context; takes the reader mutex; may block in copyout.
 */
static int mt_sysctl_stats_in(struct sysctl_req *req)
{
    if (mt_sysctl_require_root(req) != 0 || req->newptr != 0) {
        return EPERM;
    }
    if (req->oldptr == 0) {
        return SYSCTL_OUT(req, NULL, mt_g.stats_len);
    }
    struct mt_shim_counters shim;
    shim.hooks_in_flight = mt_hooks_inside(&shim.hook_calls);
    shim.errors = MT_LOAD(&mt_g.errors);
    shim.paths_skipped = MT_LOAD(&mt_g.paths_skipped);
    lck_mtx_lock(mt_g.reader_lock);
    int err = mt_core_stats(mt_g.core, &shim, mt_g.stats_buf, mt_g.stats_len) == MT_OK ? 0 : ENOMEM;
    if (err == 0) {
        err = SYSCTL_OUT(req, mt_g.stats_buf, mt_g.stats_len);
    }
    lck_mtx_unlock(mt_g.reader_lock);
    return err;
}

/**
 * kern.maptrace.config: read or write the struct mt_config (root only).
 * A write of the wrong size, version or bits is EINVAL and changes nothing
 * (the core validates). A write is a swap: it returns the config it
 * replaced, and no other write lands between (the reader mutex, held
 * across the copies), so CONFIG markers follow the order configs took
 * effect.
 * @return 0, EPERM, EINVAL, or the copy's error.
 * Context: thread context; a write takes the reader mutex; may block in
 *          copyin/copyout; no spinlock is held across them.
 */
static int mt_sysctl_config_in(struct sysctl_req *req)
{
    if (mt_sysctl_require_root(req) != 0) {
        return EPERM;
    }
    int writing = req->newptr != 0;
    if (writing) {
        lck_mtx_lock(mt_g.reader_lock);
    }
    struct mt_config cur;
    mt_core_config_get(mt_g.core, &cur);
    int err = SYSCTL_OUT(req, &cur, sizeof(cur));
    if (err == 0 && writing) {
        struct mt_config next;
        if (req->newlen != sizeof(struct mt_config)) {
            err = EINVAL;
        } else if ((err = SYSCTL_IN(req, &next, sizeof(next))) == 0) {
            int rc = mt_core_config_set(mt_g.core, &next, sizeof(next), mt_now_ns());
            err = rc == MT_OK ? 0 : EINVAL;
        }
    }
    if (writing) {
        lck_mtx_unlock(mt_g.reader_lock);
    }
    return err;
}

/**
 * kern.maptrace.events: one batch, destructive (root only). With no
 * buffer (oldptr == 0) it reports the staging size to allocate.
 * @return 0 (an empty read when nothing is pending), EPERM, ENOMEM when
 *         the caller's buffer cannot hold one record, or the copyout's
 *         error (then nothing was consumed).
 * Context: thread context; takes the reader mutex (serialises readers);
 *          may block in copyout; no spinlock is held across it.
 */
static int mt_sysctl_events_in(struct sysctl_req *req)
{
    if (mt_sysctl_require_root(req) != 0 || req->newptr != 0) {
        return EPERM;
    }
    if (req->oldptr == 0) {
        return SYSCTL_OUT(req, NULL, mt_g.staging_len);
    }
    size_t room = req->oldlen > req->oldidx ? req->oldlen - req->oldidx : 0;
    if (room > mt_g.staging_len) {
        room = mt_g.staging_len;
    }
    lck_mtx_lock(mt_g.reader_lock);
    size_t len = 0;
    int err = 0;
    /* The core's result is the errno to return (maptrace_bridge.h). */
    err = mt_core_drain_prepare(mt_g.core, mt_g.staging, room, mt_now_ns(), &len);
    if (err == MT_OK && len > 0) {
        err = SYSCTL_OUT(req, mt_g.staging, len);
        if (err == 0) {
            mt_core_drain_commit(mt_g.core);
        } else {
            /* The copy failed: the records stay in the ring. */
            mt_core_drain_abort(mt_g.core);
        }
    }
    lck_mtx_unlock(mt_g.reader_lock);
    return err;
}

/* The handlers the kernel calls: each counted in and out (above). */
static int mt_sysctl_abi SYSCTL_HANDLER_ARGS
{
    (void)oidp;
    (void)arg1;
    (void)arg2;
    return mt_sysctl_enter() ? mt_sysctl_leave(mt_sysctl_abi_in(req)) : ENOENT;
}

static int mt_sysctl_stats SYSCTL_HANDLER_ARGS
{
    (void)oidp;
    (void)arg1;
    (void)arg2;
    return mt_sysctl_enter() ? mt_sysctl_leave(mt_sysctl_stats_in(req)) : ENOENT;
}

static int mt_sysctl_config SYSCTL_HANDLER_ARGS
{
    (void)oidp;
    (void)arg1;
    (void)arg2;
    return mt_sysctl_enter() ? mt_sysctl_leave(mt_sysctl_config_in(req)) : ENOENT;
}

static int mt_sysctl_events SYSCTL_HANDLER_ARGS
{
    (void)oidp;
    (void)arg1;
    (void)arg2;
    return mt_sysctl_enter() ? mt_sysctl_leave(mt_sysctl_events_in(req)) : ENOENT;
}

#pragma mark - registration

/**
 * Fills one OID in code (handler and parent pointers stored at run time).
 * Context: thread context (start).
 */
static void mt_oid_fill(struct sysctl_oid *oid, struct sysctl_oid_list *parent, uint32_t kind,
                        void *arg1, const char *name, sysctl_handler_t handler, const char *fmt,
                        const char *descr)
{
    memset(oid, 0, sizeof(*oid));
    MT_OID_SET_PARENT(oid, parent);
    oid->oid_number = OID_AUTO;
    oid->oid_kind = (int)(kind | CTLFLAG_LOCKED | CTLFLAG_OID2);
    oid->oid_arg1 = arg1;
    oid->oid_arg2 = 0;
    oid->oid_name = name;
    oid->oid_handler = handler;
    oid->oid_fmt = fmt;
    oid->oid_descr = descr;
    oid->oid_version = SYSCTL_OID_VERSION;
}

/**
 * Registers kern.maptrace and its four leaves (node first).
 * @return 0 (sysctl_register_oid cannot report failure).
 * Context: thread context (start, last step); may block.
 */
int mt_sysctl_start(void)
{
    mt_sysctl_children.slh_first = NULL;
    mt_oid_fill(&mt_oid_node, &sysctl__kern_children, CTLTYPE_NODE | CTLFLAG_RW,
                &mt_sysctl_children, MT_SYSCTL_NODE, NULL, "N", "maptrace");
    mt_oid_fill(&mt_oid_abi, &mt_sysctl_children, CTLTYPE_INT | CTLFLAG_RD, NULL, "abi",
                mt_sysctl_abi, "IU", "ABI version");
    mt_oid_fill(&mt_oid_stats, &mt_sysctl_children, CTLTYPE_OPAQUE | CTLFLAG_RD, NULL, "stats",
                mt_sysctl_stats, "S,mt_stats", "counters");
    mt_oid_fill(&mt_oid_config, &mt_sysctl_children, CTLTYPE_OPAQUE | CTLFLAG_RW, NULL, "config",
                mt_sysctl_config, "S,mt_config", "configuration (root)");
    /* Masked: a read consumes a batch, so a listing (`sysctl -A`) must not
     * read it (CTLFLAG_MASKED: "don't show in sysctl listing in userland",
     * bsd/sys/sysctl.h, xnu-11417.121.6). */
    mt_oid_fill(&mt_oid_events, &mt_sysctl_children, CTLTYPE_OPAQUE | CTLFLAG_RD | CTLFLAG_MASKED,
                NULL, "events", mt_sysctl_events, "S,mt_batch", "one batch of events (root)");
    __atomic_store_n(&mt_sysctl_closing, 0, __ATOMIC_SEQ_CST);
    sysctl_register_oid(&mt_oid_node);
    sysctl_register_oid(&mt_oid_abi);
    sysctl_register_oid(&mt_oid_stats);
    sysctl_register_oid(&mt_oid_config);
    sysctl_register_oid(&mt_oid_events);
    mt_g.sysctl_registered = 1;
    return 0;
}

/**
 * Closes the sysctls to new requests, waits (bounded by
 * mt_tunable_unload_wait_ms) until no handler runs, then unregisters the
 * leaves and the node (reverse order). XNU's unregister still waits for a
 * handler it let in, but one entering now leaves at once (ENOENT).
 * @return 0, or EBUSY when a handler stayed inside (a reader stuck in its
 *         copy): nothing was unregistered and the sysctls are open again.
 * Context: thread context (stop, first step); may block.
 */
int mt_sysctl_stop(void)
{
    if (!mt_g.sysctl_registered) {
        return 0;
    }
    __atomic_store_n(&mt_sysctl_closing, 1, __ATOMIC_SEQ_CST);
    for (uint32_t waited = 0; __atomic_load_n(&mt_sysctl_inside, __ATOMIC_SEQ_CST) != 0;
         waited += MT_SYSCTL_POLL_MS) {
        if (waited >= mt_tunable_unload_wait_ms) {
            __atomic_store_n(&mt_sysctl_closing, 0, __ATOMIC_SEQ_CST);
            return EBUSY;
        }
        IOSleep(MT_SYSCTL_POLL_MS);
    }
    sysctl_unregister_oid(&mt_oid_events);
    sysctl_unregister_oid(&mt_oid_config);
    sysctl_unregister_oid(&mt_oid_stats);
    sysctl_unregister_oid(&mt_oid_abi);
    sysctl_unregister_oid(&mt_oid_node);
    mt_g.sysctl_registered = 0;
    return 0;
}
