/*
 * mt_main.c - kmod scaffolding and the shim's lifecycle.
 *
 * Role: the kmod_info the loader reads, the tunables, and the start/stop
 * routines that bring every other part of the shim up and down in the
 * order docs/ARCHITECTURE.md section 7 fixes:
 *
 *   start: locks -> layout discovery -> ring memory + mt_core_init ->
 *          path pool -> MAC policy -> kauth listener (kauth variant) ->
 *          sweep of mounted filesystems (patches vectors) -> sysctl LAST
 *          (resident build: then the MAC policy, which cannot be undone).
 *   stop:  sysctl FIRST -> MAC unregister (UNLOADOK) -> kauth unlisten ->
 *          restore every patched vector entry -> wait (bounded) until no
 *          hook is in flight -> clear mt_g.core -> wait again ->
 *          mt_core_shutdown -> free.
 *
 * A refused unload (MAC refused, or a hook stuck past the wait) puts back
 * what stop took down (mt_resume): the kext that stays loaded keeps
 * tracing and stays readable, and a later unload can succeed.
 * stop may run more than once (after a refused unload, or from a failed
 * start): every step checks whether it still has something to undo.
 *
 * Calls: mt_core_mem_size, mt_core_init, mt_core_shutdown,
 *        mt_core_drain_capacity, mt_core_stats_size.
 */
#include "mt_shim.h"

#pragma mark - tunables

uint32_t mt_tunable_nshards = 8;
uint32_t mt_tunable_slots_per_shard = 4096;
uint32_t mt_tunable_unload_wait_ms = 2000;
uint32_t mt_tunable_staging_max = 1u << 20;

struct mt_state mt_g;

/* Consecutive quiet polls before stop believes the hooks have drained. */
#define MT_DRAIN_QUIET_POLLS 3
/* Milliseconds between two polls of the in-flight count. */
#define MT_DRAIN_POLL_MS 10

#pragma mark - kmod scaffolding

kern_return_t mt_kmod_start(kmod_info_t *ki, void *data);
kern_return_t mt_kmod_stop(kmod_info_t *ki, void *data);

KMOD_EXPLICIT_DECL(MT_KMOD_ID, "0.1.0", MT_KMOD_START, MT_KMOD_STOP)

MT_PRIVATE_EXTERN int _kext_apple_cc = MT_APPLE_CC;

#pragma mark - memory

/**
 * Frees one IOMalloc block and forgets it.
 * @param p   the block pointer (NULL: nothing to do).
 * @param len its size as allocated (reset to 0).
 * Context: thread context (stop); may block.
 */
static void mt_free(void **p, size_t *len)
{
    if (*p != NULL) {
        IOFree(*p, *len);
    }
    *p = NULL;
    *len = 0;
}

/**
 * Allocates the core's ring memory and lays the core out in it, with a
 * random vnode-id key and generation for this load.
 * @return 0 or an errno value; nothing to undo beyond what stop frees.
 * Context: thread context (start); may block.
 */
static int mt_core_start(void)
{
    struct mt_core_params params;
    memset(&params, 0, sizeof(params));
    params.nshards = mt_tunable_nshards;
    params.slots_per_shard = mt_tunable_slots_per_shard;
    params.probe_method = mt_g.probe_method;
    read_random(params.hash_key, sizeof(params.hash_key));
    read_random(&params.generation, sizeof(params.generation));
    params.start_ns = mt_now_ns();

    size_t len = mt_core_mem_size(&params);
    if (len == 0) {
        IOLog("maptrace: invalid ring tunables (%u shards, %u slots)\n", params.nshards,
              params.slots_per_shard);
        return EINVAL;
    }
    mt_g.core_mem = IOMallocZero(len);
    if (mt_g.core_mem == NULL) {
        return ENOMEM;
    }
    mt_g.core_mem_len = len;
    struct mt_core *core = mt_core_init(mt_g.core_mem, len, &params);
    if (core == NULL) {
        return EINVAL;
    }
    __atomic_store_n(&mt_g.core, core, __ATOMIC_RELEASE);

    /* One batch is staged in kernel memory, then copied out: the staging
     * buffer bounds a batch. Zeroed: the drain writes every byte it
     * reports, but a future gap in a batch would then copy out zeros, not
     * a previous allocation's kernel memory. */
    size_t staging = mt_core_drain_capacity(mt_g.core);
    if (staging > mt_tunable_staging_max) {
        staging = mt_tunable_staging_max;
    }
    mt_g.staging = IOMallocZero(staging);
    if (mt_g.staging == NULL) {
        return ENOMEM;
    }
    mt_g.staging_len = staging;

    size_t stats = mt_core_stats_size(mt_g.core);
    mt_g.stats_buf = IOMallocZero(stats);
    if (mt_g.stats_buf == NULL) {
        return ENOMEM;
    }
    mt_g.stats_len = stats;
    return 0;
}

#pragma mark - stop

/**
 * Waits until no hook is in flight, and stays so for a few polls.
 *
 * The count is the per-CPU counters' sum (mt_hooks_inside): exact even for
 * a hook that entered on one CPU and leaves on another.
 * RACE: a thread may have read a patched vector entry (or the MAC/kauth
 * callback pointer) just before it was restored and not yet entered the
 * hook's mt_enter(). The counters cannot see it; requiring the count to stay
 * at zero over MT_DRAIN_QUIET_POLLS polls MT_DRAIN_POLL_MS apart makes that
 * window (a few instructions) negligible.
 * @return 1 when drained, 0 when hooks were still running after
 *         mt_tunable_unload_wait_ms.
 * Context: thread context (stop); sleeps.
 */
static int mt_wait_drained(void)
{
    uint32_t waited = 0;
    uint32_t quiet = 0;
    for (;;) {
        if (mt_hooks_inside(NULL) == 0) {
            quiet++;
            if (quiet >= MT_DRAIN_QUIET_POLLS) {
                return 1;
            }
        } else {
            quiet = 0;
        }
        if (waited >= mt_tunable_unload_wait_ms) {
            return 0;
        }
        IOSleep(MT_DRAIN_POLL_MS);
        waited += MT_DRAIN_POLL_MS;
    }
}

/**
 * After a refused unload of a started kext: puts back, in start's order,
 * what stop took down, so the kext that stays loaded keeps tracing and
 * can be read. Events in the refused stop's wait were not traced.
 * Context: thread context (stop); may block.
 */
static void mt_resume(void)
{
    if (!mt_g.mac_registered && mt_mac_start() != 0) {
        IOLog("maptrace: MAC policy not registered again; kauth and the sweep find vectors\n");
    }
    if (mt_kauth_start() != 0) {
        IOLog("maptrace: kauth listener not registered again\n");
    }
    if (mt_g.patch_lock != NULL) {
        mt_vnops_repatch();
    }
    mt_vnops_sweep();
    if (!mt_g.sysctl_registered) {
        (void)mt_sysctl_start();
    }
    mt_g.started = 1;
}

/**
 * Undoes everything start did, in the documented order. Safe to call
 * again after it refused (each step checks its own state).
 * @return 0 when the kext may be unloaded; EBUSY when it must stay (MAC
 *         refused to unregister, or hooks did not drain in time), in which
 *         case nothing the hooks can reach has been freed and a started
 *         kext is tracing again (mt_resume).
 * Context: thread context (kmod stop, failed start); sleeps.
 */
static int mt_stop_all(void)
{
    /* Only a started kext resumes; a failed start is being torn down. */
    int resume = mt_g.started;
    mt_g.started = 0;

    /* 1. No new sysctl requests; wait, bounded, for running ones. */
    if (mt_sysctl_stop() != 0) {
        IOLog("maptrace: a sysctl request is still running (a reader stuck in its copy?); "
              "refusing to unload, still tracing\n");
        if (resume) {
            mt_resume();
        }
        return EBUSY;
    }

    /* 2. MAC hooks off. Without UNLOADOK this would be EBUSY forever. */
    if (mt_mac_stop() != 0) {
        IOLog("maptrace: MAC policy refused to unregister; staying loaded\n");
        if (resume) {
            mt_resume();
        }
        return EBUSY;
    }

    /* 3. kauth discovery off. */
    mt_kauth_stop();

    /* 4. Vector entries back to the originals: no new VNOP reaches us.
     * An entry another kext hooked over ours keeps calling our trampoline:
     * stay loaded until that kext has gone (or unhooked). */
    if (mt_g.patch_lock != NULL) {
        uint32_t unknown = 0;
        uint32_t foreign = mt_vnops_restore(&unknown);
        if (foreign != 0 || unknown != 0) {
            if (foreign != 0) {
                IOLog("maptrace: another kext hooked over %u vnode-op entries; refusing to "
                      "unload, still tracing\n",
                      foreign);
            } else {
                IOLog("maptrace: %u hooked vector(s) not in use by a mounted filesystem; "
                      "refusing to unload, still tracing\n",
                      unknown);
            }
            if (resume) {
                mt_resume();
            }
            return EBUSY;
        }
    }

    /* 5. Nothing may be freed while a hook can still touch it. */
    if (!mt_wait_drained()) {
        IOLog("maptrace: %llu hook(s) still running; refusing to unload, still tracing\n",
              (unsigned long long)mt_hooks_inside(NULL));
        if (resume) {
            mt_resume();
        }
        return EBUSY;
    }

    /* 6. Hooks stop finding the core. A hook that counted itself in flight
     * before this store may still hold the old pointer: drain again, so no
     * one is left using it. A hook entering later reads NULL without
     * touching the core's memory (mt_enter precedes mt_core_ref) and calls
     * its filesystem's operation from the shim's copy of the originals,
     * counted in flight, so this drain waits for it too.
     * seq_cst: a hook that read the old pointer counted its entry before
     * this store, so the wait's scan sees it (struct mt_hook_slot). */
    struct mt_core *core = mt_g.core;
    __atomic_store_n(&mt_g.core, NULL, __ATOMIC_SEQ_CST);
    int drained = mt_wait_drained();
    /* 6b. A hook entering after the last drain's scan would run its
     * filesystem's operation from code about to be unmapped: close the
     * copy first, then drain once more. A hook that found the copy open
     * counted itself before this store (both seq_cst), so the drain sees
     * it; one entering later fails open at once. */
    if (drained) {
        mt_vnops_shadow_close(1);
        drained = mt_wait_drained();
    }
    if (!drained) {
        IOLog("maptrace: %llu hook(s) still running; refusing to unload, still tracing\n",
              (unsigned long long)mt_hooks_inside(NULL));
        mt_vnops_shadow_close(0);
        __atomic_store_n(&mt_g.core, core, __ATOMIC_RELEASE);
        if (resume) {
            mt_resume();
        }
        return EBUSY;
    }
    uint64_t untraced = MT_LOAD(&mt_g.untraced_calls);
    if (untraced != 0) {
        IOLog("maptrace: %llu vnode operation(s) reached their filesystem untraced "
              "(dispatched to a hook as it was being removed)\n",
              (unsigned long long)untraced);
    }
    if (core != NULL) {
        mt_core_shutdown(core);
    }

    /* 7. Free. */
    mt_free(&mt_g.core_mem, &mt_g.core_mem_len);
    mt_free(&mt_g.staging, &mt_g.staging_len);
    mt_free(&mt_g.stats_buf, &mt_g.stats_len);
    mt_vnops_fini();
    if (mt_g.patch_lock != NULL) {
        lck_mtx_free(mt_g.patch_lock, mt_g.lck_grp);
        mt_g.patch_lock = NULL;
    }
    if (mt_g.reader_lock != NULL) {
        lck_mtx_free(mt_g.reader_lock, mt_g.lck_grp);
        mt_g.reader_lock = NULL;
    }
    if (mt_g.lck_grp != NULL) {
        lck_grp_free(mt_g.lck_grp);
        mt_g.lck_grp = NULL;
    }
    return 0;
}

#pragma mark - start

/**
 * Registers the MAC policy, saying why when it fails.
 * @return 0 or mac_policy_register's error.
 * Context: thread context (start); may block.
 */
static int mt_mac_register(void)
{
    int err = mt_mac_start();
    if (err != 0) {
        IOLog("maptrace: mac_policy_register failed (%d)\n", err);
    }
    return err;
}

/**
 * Brings the shim up; on failure leaves partial state for mt_stop_all.
 * @return 0 or an errno value.
 * Context: thread context (kmod start); may block.
 */
static int mt_start_all(void)
{
    mt_g.lck_grp = lck_grp_alloc_init("org.maptrace.kext", NULL);
    if (mt_g.lck_grp == NULL) {
        return ENOMEM;
    }
    mt_g.patch_lock = lck_mtx_alloc_init(mt_g.lck_grp, NULL);
    mt_g.reader_lock = lck_mtx_alloc_init(mt_g.lck_grp, NULL);
    if (mt_g.patch_lock == NULL || mt_g.reader_lock == NULL) {
        return ENOMEM;
    }

    int err = mt_layout_discover();
    if (err != 0) {
        IOLog("maptrace: vnode layout discovery failed (%d); not loading\n", err);
        return err;
    }
    err = mt_core_start();
    if (err != 0) {
        return err;
    }
    err = mt_vnops_init();
    if (err != 0) {
        return err;
    }
#ifndef MT_RESIDENT
    err = mt_mac_register();
    if (err != 0) {
        return err;
    }
#endif
    /* The kauth listener only discovers vectors, as MAC and the sweep do: a
     * full listener table (KAUTH_SCOPE_MAX_LISTENERS) costs it, not the
     * start. */
    if (mt_kauth_start() != 0) {
        IOLog("maptrace: kauth listener not registered (table full?); vectors are found "
              "through MAC and the sweep\n");
    }
    mt_vnops_sweep();
    err = mt_sysctl_start();
    if (err != 0) {
        return err;
    }
#ifdef MT_RESIDENT
    /* A resident policy can never be unregistered, so it comes last: no
     * later step can fail and unload a kext with its policy registered. */
    err = mt_mac_register();
    if (err != 0) {
        return err;
    }
#endif
    mt_g.started = 1;
    return 0;
}

/**
 * kmod start routine (reached through kmod_info.start).
 * @param ki   the kext's kmod_info.
 * @param data loader data, handed to mac_policy_register.
 * @return KERN_SUCCESS when started; KERN_FAILURE with nothing left
 *         registered, hooked or allocated; or KERN_SUCCESS for a failed
 *         start that could not undo itself (see below).
 * Context: thread context; may block.
 */
kern_return_t mt_kmod_start(kmod_info_t *ki, void *data)
{
    (void)ki;
    memset(&mt_g, 0, sizeof(mt_g));
    mt_g.kmod_data = data;
    int err = mt_start_all();
    if (err == 0) {
        return KERN_SUCCESS;
    }
    if (mt_stop_all() == 0) {
        return KERN_FAILURE;
    }
    /* The cleanup was refused: another kext hooked over our entries, or a
     * hook is still running past the wait bound. XNU frees a kext whose
     * start failed without calling its stop (OSKext::loadKextWithIdentifier
     * -> removeKext -> OSKext::unload, which stops only a started kext, then
     * unmaps the executable; libkern/c++/OSKext.cpp, xnu-11417.121.6): our
     * trampolines and memory would be gone under those callers. So stay
     * loaded, recording nothing (mt_g.started stays 0, so stop does not
     * resume and even a resident build may unload); a later unload retries
     * the cleanup. */
    if (mt_g.core != NULL) {
        mt_core_shutdown(mt_g.core);
    }
    IOLog("maptrace: start failed (%d) and its hooks could not all be removed; staying loaded, "
          "not tracing: unload again once nothing else calls into it\n",
          err);
    return KERN_SUCCESS;
}

/**
 * kmod stop routine: refuses (KERN_FAILURE) when the kext must stay loaded.
 * @param ki   the kext's kmod_info.
 * @param data unused (NULL).
 * @return KERN_SUCCESS when everything was undone and freed.
 * Context: thread context; sleeps while waiting for hooks to drain.
 */
kern_return_t mt_kmod_stop(kmod_info_t *ki, void *data)
{
    (void)ki;
    (void)data;
#ifdef MT_RESIDENT
    if (mt_g.started) {
        IOLog("maptrace: resident build (MT_RESIDENT): its MAC policy has no UNLOADOK and "
              "cannot be unregistered; refusing to unload, still tracing\n");
        return KERN_FAILURE;
    }
#endif
    return mt_stop_all() == 0 ? KERN_SUCCESS : KERN_FAILURE;
}

#pragma mark - services for the core

/**
 * The core's panic handler lands here (kernel builds only; unreachable by
 * construction).
 * @param file     source file of the panic, not NUL-terminated.
 * @param file_len bytes of file.
 * @param line     line number.
 * Context: any; never returns.
 */
void mt_kpi_panic(const char *file, uint32_t file_len, uint32_t line)
{
    panic("maptrace core panic at %.*s:%u", (int)file_len, file, line);
}
