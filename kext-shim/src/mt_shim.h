/*
 * mt_shim.h - state and functions shared by the shim's C files.
 *
 * The shim is thin: registration (kauth, MAC, sysctl, vnode-op vectors),
 * extracting fields from kernel objects, and lifecycle. Policy, filtering,
 * encoding and the vector table live in the core (maptrace_bridge.h).
 * All state is one global, reset by every start, so the same image can be
 * loaded, unloaded and loaded again.
 */
#ifndef MT_SHIM_H
#define MT_SHIM_H

#include "mt_kernel.h"

#pragma mark - tunables

/*
 * Tunables, read once at start. They are plain globals with sane defaults
 * so a test harness (or a debugger) can change them before a load.
 */
/* Shards of the ring (the CPU number modulo this picks one). */
extern uint32_t mt_tunable_nshards;
/* 64-byte slots per shard: a power of two. */
extern uint32_t mt_tunable_slots_per_shard;
#ifdef MT_WITH_KAUTH
/* kauth variant only: register the kauth vnode listener for discovery. */
extern uint32_t mt_tunable_kauth;
#endif
/* How long stop waits for in-flight hooks before refusing the unload. */
extern uint32_t mt_tunable_unload_wait_ms;
/* Upper bound of the events staging buffer (one batch). */
extern uint32_t mt_tunable_staging_max;

#pragma mark - shared state

/* Preallocated path buffers for PATH records (bit i of path_busy). */
#define MT_PATH_POOL 16

/* Bytes of struct vnode scanned for the v_op pointer at start. Never past
 * the object: v_op is followed by at least v_mount, v_data, v_label and
 * v_resolve (docs/xnu.md §2.2), so with v_op at 200 (10.15) or 208 (15.x) the
 * vnode is at least 240 bytes long. Reading further would read the next
 * zone element (or an unmapped page). A v_op beyond this window is not
 * found, and the kext refuses to start. */
#define MT_VNODE_SCAN_BYTES 240

/* Offsets of the vnode counts, stable on LP64 since 10.12 (docs/xnu.md
 * section 2.2); used only after they are validated at start. */
#define MT_OFF_KUSECOUNT 92
#define MT_OFF_USECOUNT 96
#define MT_OFF_IOCOUNT 100

/*
 * Hook counters, one slot per CPU so that no cache line is written by every
 * CPU on every hook (a slot per CPU modulo MT_HOOK_SLOTS; arm64, where
 * cpu_number is private: per thread hash, mt_slot_here).
 *
 * INVARIANT (drain): enters and leaves only ever grow. A hook adds 1 to
 * enters of the slot of the CPU it enters on and, when it is done with
 * everything stop frees, 1 to leaves of that same slot, even when it leaves
 * on another CPU (it migrated, or slept in the filesystem): mt_enter
 * returns the slot, mt_leave takes it back. So a slot's enters - leaves is
 * its hooks inside, and the sum over all slots is every hook inside.
 * mt_hooks_inside reads every leaves (acquire) BEFORE any enters, so each
 * hook whose leave it counted has its enter counted too: the difference it
 * returns is never below the true count at the moment between the two
 * scans, and 0 means no hook was inside then. A leave on the CPU the hook
 * leaves on would need the same two scans (with one signed counter per slot
 * in one pass, a hook entering on a slot already read and leaving on one
 * not yet read cancels a hook still inside). tests/loom_drain.rs models
 * the protocol, migration and the late hook included.
 * INVARIANT (core pointer): a hook counts its entry (seq_cst) before it
 * loads mt_g.core (seq_cst); stop stores NULL (seq_cst) before it scans.
 * A hook that still read the old core therefore entered before the store
 * in the single total order of seq_cst operations, and the scan counts it.
 */
#define MT_HOOK_SLOTS 64
/* 128: Apple arm64 cache lines; two lines of 64 on x86_64. */
#define MT_CACHE_LINE 128

struct mt_hook_slot {
    uint64_t enters;
    uint64_t leaves;
} __attribute__((aligned(MT_CACHE_LINE)));

struct mt_state {
    /* Lifecycle. */
    int started; /* start finished and stop has not begun */
    void *kmod_data;

    /* The core and the memory it lives in. */
    struct mt_core *core;
    void *core_mem;
    size_t core_mem_len;

    /* Reader side: staging buffer for one batch, stats buffer. */
    void *staging;
    size_t staging_len;
    void *stats_buf;
    size_t stats_len;

    /* PATH record buffers: MT_PATH_POOL * MAXPATHLEN bytes. */
    char *path_pool;
    uint32_t path_busy;

    /* Locks. */
    lck_grp_t *lck_grp;
    lck_mtx_t *patch_lock;  /* serialises every write to a vector and the
                             * table changes; taken inside vnode_iterate
                             * callouts, never held across an iteration */
    lck_mtx_t *reader_lock; /* serialises sysctl readers (drain, stats) and config writes */

    /* Layout found at start. */
    size_t v_op_off;
    uint32_t probe_method; /* enum mt_probe_method */

    /* Registrations (each undone by stop exactly once). */
    int mac_registered;
    mac_policy_handle_t mac_handle;
#ifdef MT_WITH_KAUTH
    kauth_listener_t kauth_listener;
#endif
    int sysctl_registered;

    /* Counters (atomic), written only on rare paths. */
    uint64_t errors;
    uint64_t paths_skipped;
    uint64_t vectors_patched;
    uint64_t untraced_calls; /* hooks that called the shim's copy of an
                              * original (the core's table had none) */

    /* Hook entries and exits, per CPU (see mt_enter). */
    struct mt_hook_slot hooks[MT_HOOK_SLOTS];
};

extern struct mt_state mt_g;

#pragma mark - atomics

#define MT_INC(p) ((void)__atomic_fetch_add((p), 1, __ATOMIC_RELAXED))
#define MT_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)

/**
 * mt_slot_here for a caller that already read mt_entry_cpu (x86_64: the
 * slot of that CPU; elsewhere the thread hash, cpu unused).
 * Context: any; never blocks.
 */
static inline uint32_t mt_slot_at(uint32_t cpu)
{
#if defined(__x86_64__)
    return cpu % MT_HOOK_SLOTS;
#else
    (void)cpu;
    uint64_t h = (uint64_t)(uintptr_t)current_thread() * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> 58) % MT_HOOK_SLOTS;
#endif
}

/**
 * The counter slot of the CPU the caller runs on: the CPU number where a
 * public KPI gives it (x86_64), otherwise a hash of the thread (arm64:
 * cpu_number is kpi.private), which spreads CPUs' threads over the slots.
 * Any value is correct (mt_hooks_inside sums every slot); this one keeps a
 * CPU's writes on its own line.
 * Context: any; never blocks.
 */
static inline uint32_t mt_slot_here(void)
{
    return mt_slot_at(mt_entry_cpu());
}

/**
 * Marks a kernel-called hook as running: counted for stats and for unload.
 * seq_cst, so it precedes the hook's mt_core_ref in the total order that
 * stop's store of NULL is in (see struct mt_hook_slot).
 * @param cpu mt_entry_cpu(), read by the caller (see mt_slot_at).
 * @return the slot counted, for the hook's mt_leave.
 * Context: any; never blocks.
 */
static inline uint32_t mt_enter_at(uint32_t cpu)
{
    uint32_t slot = mt_slot_at(cpu);
    __atomic_fetch_add(&mt_g.hooks[slot].enters, 1, __ATOMIC_SEQ_CST);
    return slot;
}

/**
 * mt_enter_at on the CPU the caller runs on (see mt_slot_here).
 * Context: any; never blocks.
 */
static inline uint32_t mt_enter(void)
{
    return mt_enter_at(mt_entry_cpu());
}

/**
 * Marks a hook as finished, on the slot its mt_enter counted (wherever it
 * runs now); after the last one stop may free the core. Release:
 * everything the hook did with the core happens before a drain that counts
 * this leave.
 * Context: any; never blocks.
 */
static inline void mt_leave(uint32_t slot)
{
    __atomic_fetch_add(&mt_g.hooks[slot].leaves, 1, __ATOMIC_RELEASE);
}

/**
 * Hooks inside right now (see struct mt_hook_slot): never below the true
 * count at one moment of the call, 0 only when none was inside then.
 * @param calls receives sum(enters), every hook ever entered (may be NULL).
 * Context: any; never blocks.
 */
static inline uint64_t mt_hooks_inside(uint64_t *calls)
{
    uint64_t leaves = 0;
    uint64_t enters = 0;
    for (uint32_t i = 0; i < MT_HOOK_SLOTS; i++) {
        leaves += __atomic_load_n(&mt_g.hooks[i].leaves, __ATOMIC_ACQUIRE);
    }
    for (uint32_t i = 0; i < MT_HOOK_SLOTS; i++) {
        enters += __atomic_load_n(&mt_g.hooks[i].enters, __ATOMIC_SEQ_CST);
    }
    if (calls != NULL) {
        *calls = enters;
    }
    return enters - leaves;
}

/**
 * Counts a fail-open path taken (reported as stats.errors).
 * Context: any; never blocks.
 */
static inline void mt_error(void)
{
    MT_INC(&mt_g.errors);
}

/**
 * The core as hooks see it: published before any hook can run, cleared
 * only after every hook drained; read atomically since hooks race with stop.
 * @return the core, or NULL outside start..stop.
 * Context: any; never blocks.
 */
static inline const struct mt_core *mt_core_ref(void)
{
    /* seq_cst: after mt_enter in the order stop's NULL store is in. */
    return __atomic_load_n(&mt_g.core, __ATOMIC_SEQ_CST);
}

/**
 * Nanoseconds since boot.
 * Context: any; never blocks.
 */
static inline uint64_t mt_now_ns(void)
{
    uint64_t ns = 0;
    absolutetime_to_nanoseconds(mach_absolute_time(), &ns);
    return ns;
}

#pragma mark - mt_layout.c

int mt_layout_discover(void);
void mt_counts_snapshot_unvalidated(vnode_t vp, struct mt_event *ev);

/**
 * Reads the 32-bit count at off in vp.
 * @return the count as the kernel stores it (a racy, aligned snapshot).
 * Context: any; never blocks.
 */
static inline int32_t mt_read_count(vnode_t vp, size_t off)
{
    return __atomic_load_n((const int32_t *)(const void *)((const char *)vp + off),
                           __ATOMIC_RELAXED);
}

/**
 * Fills ev's counts with the method validated at start. Inline for the
 * validated offsets (three loads, every hook on a known layout); the
 * vnode_isinuse search and the unknown layout are out of line.
 * @param vp the hook's vnode (the caller's VNOP holds an iocount).
 * @param ev the event being built.
 * Context: any hook; never sleeps or allocates.
 */
static inline void mt_counts_snapshot(vnode_t vp, struct mt_event *ev)
{
    if (mt_g.probe_method != MT_PROBE_OFFSET) {
        mt_counts_snapshot_unvalidated(vp, ev);
        return;
    }
    ev->count_method = MT_PROBE_OFFSET;
    ev->usecount = mt_read_count(vp, MT_OFF_USECOUNT);
    ev->kusecount = mt_read_count(vp, MT_OFF_KUSECOUNT);
    ev->iocount = mt_read_count(vp, MT_OFF_IOCOUNT);
}

#pragma mark - mt_vnops.c

int mt_vnops_init(void);
void mt_vnode_seen(vnode_t vp);
void mt_vnops_sweep(void);
uint32_t mt_vnops_restore(uint32_t *unknown);
void mt_vnops_mount_going(mount_t mp);
void mt_vnops_repatch(void);
void mt_vnops_shadow_close(int closed);
void mt_vnops_fini(void);

#pragma mark - mt_proc.c

void mt_proc_record_name(const struct mt_core *core, uint32_t hint, const struct mt_event *ev);

/**
 * Records a PROC record naming ev->pid if the core wants one now (see
 * mt_proc.c). The core's lock-free answer, almost always "no", is asked
 * inline; the name is read and recorded out of line.
 * Context: any hook, including the pagein path; never blocks.
 */
static inline void mt_proc_note(const struct mt_core *core, uint32_t hint,
                                const struct mt_event *ev)
{
    if (core != NULL && mt_core_proc_claim(core, ev->pid)) {
        mt_proc_record_name(core, hint, ev);
    }
}

#pragma mark - mt_kauth.c

/*
 * Build variants. The default kext (macOS 11-15) neither compiles nor
 * imports kauth: kauth_listen_scope/kauth_unlisten_scope are
 * __kpi_deprecated (bsd/sys/kauth.h, xnu-11417.121.6) and Apple lists them
 * as unsupported from macOS 11.0, where a kext importing them does not load.
 * Discovery there is MAC (vnode_check_open, vnode_notify_open,
 * vnode_check_exec) plus the mount sweep. -DMT_WITH_KAUTH builds the
 * kauth variant for macOS 10.15 (its own bundle id, MT_KMOD_ID).
 */
#ifdef MT_WITH_KAUTH
#define MT_KMOD_ID org.maptrace.kext.kauth
/* Registers the listener unless mt_tunable_kauth is 0 or it is registered. */
int mt_kauth_start(void);
void mt_kauth_stop(void);
#else
#define MT_KMOD_ID org.maptrace.kext
static inline int mt_kauth_start(void)
{
    return 0;
}
static inline void mt_kauth_stop(void)
{
}
#endif

#pragma mark - mt_mac.c

/*
 * -DMT_RESIDENT: the MAC policy is registered without
 * MPC_LOADTIME_FLAG_UNLOADOK, so no MAC check in the system pays for an
 * unloadable policy, and the kext can never be unloaded (stop refuses).
 */
#ifdef MT_RESIDENT
#define MT_MAC_LOADTIME_FLAGS 0
#else
#define MT_MAC_LOADTIME_FLAGS MPC_LOADTIME_FLAG_UNLOADOK
#endif

int mt_mac_start(void);
int mt_mac_stop(void);

#pragma mark - mt_sysctl.c

int mt_sysctl_start(void);
int mt_sysctl_stop(void);

#endif /* MT_SHIM_H */
