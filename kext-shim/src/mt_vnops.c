/*
 * mt_vnops.c - the VNOP_MMAP / VNOP_PAGEIN / VNOP_MNOMAP / VNOP_CLOSE hooks, the
 * patching of filesystem vnode-op vectors, and the sweep of mounted
 * filesystems at start.
 *
 * Role: the first vnode seen (kauth, MAC or sweep) with a vector the core
 * does not know causes that vector's mmap, pagein, mnomap and close entries to be
 * replaced by the trampolines below (only pagein for a stacking filesystem,
 * nullfs or bindfs, whose others forward to the lower vnode's vector),
 * once, under the patch lock; the
 * originals go into the core's table BEFORE a hook becomes visible, so a
 * hook always finds its original. Each trampoline counts itself in flight,
 * snapshots the vnode counts BEFORE the original (MMAP: before ubc_map's
 * reference; MNOMAP: still holding it), calls the original, and records.
 * No allocation, sleep or lock in a trampoline beyond the core's ring CAS
 * (and vn_getpath on the mmap path, which may sleep; never in pagein).
 *
 * Calls: mt_core_wants, mt_core_record, mt_core_record_path, mt_proc_note,
 *        mt_core_vector_original, mt_core_vector_insert,
 *        mt_core_vector_count, mt_core_vector_get, mt_core_vector_remove.
 */
#include "mt_shim.h"

/* The trampolines by enum mt_vop, filled in code at init (arm64e signs a
 * function pointer taken in code; a static initializer would not). */
static vnop_t mt_hooks[MT_VOP__COUNT];
/* Set under the patch lock when stop restores the vectors: no new patch
 * and no unmount-time unhook until resume clears it. */
static int mt_patch_closed;

/*
 * The shim's own copy of the originals of every vector hooked since start:
 * what a trampoline calls when the core's table cannot answer (the core
 * already cleared by stop, or the vector restored and forgotten at its
 * filesystem's last unmount) after XNU had dispatched the call to us
 * (bsd/vfs/kpi_vfs.c reads the entry without a lock, xnu-11417.121.6).
 * Failing such a call instead would skip the filesystem's own operation
 * (APFS/HFS checks in VNOP_MMAP) or SIGBUS the faulting process (EIO from
 * VNOP_PAGEIN).
 * Invariant: entries [0, mt_shadow_len) never change once published
 * (append-only, under the patch lock; the length stored with release after
 * the entry), so a lock-free reader never sees a torn entry; the last
 * entry for an address is the current one (a vector freed by vfs_fsremove
 * and reallocated at the same address is patched, so appended, before any
 * trampoline of ours sits in it). A vector's memory stays valid while a
 * hook runs for one of its vnodes: the caller's iocount holds the mount,
 * and vfs_fsremove refuses a mounted type.
 */
/* Entries we never patch, recorded as a vector's fingerprint when it is
 * hooked: lookup and reclaim, which every filesystem implements itself.
 * Both differing later means vfs_fsremove freed the vector and vfs_fsadd
 * gave its memory to another filesystem (bsd/vfs/kpi_vfs.c,
 * xnu-11417.121.6); a kext hooking over ours would have to replace both
 * as well to be mistaken for one. */
#define MT_FINGERPRINT_COUNT 2

struct mt_shadow_entry {
    const vnop_t *vector;
    vnop_t originals[MT_VOP__COUNT];
    vnop_t fingerprint[MT_FINGERPRINT_COUNT];
    /* The filesystem type of the mount the vector was hooked from: every
     * vnode using a vector is of the one type vfs_fsadd made it for, and
     * no hook over ours changes a mount's type. */
    char fstype[MFSNAMELEN + 1];
};
/* Entries for a whole load's life: one per vector hooked or refused by a
 * full core table (appended before the core's insert), plus one each
 * time a filesystem type comes back with other originals (its kext
 * reloaded elsewhere after vfs_fsremove); a type mounted again with the
 * same originals reuses its entry. Full, a new vector stays unhooked
 * (counted in stats.errors). 512 x 72 bytes of zeroed data. */
#define MT_SHADOW_MAX (8 * MT_CORE_MAX_VECTORS)
static struct mt_shadow_entry mt_shadow[MT_SHADOW_MAX];
static uint32_t mt_shadow_len;
/* Set by stop before its last drain: a hook entering later has no drain
 * left to wait for it, so it fails open at once rather than run the
 * filesystem's operation from code about to be unmapped. seq_cst with
 * mt_enter: a hook that read it clear counted itself first, so the last
 * drain sees it. */
static int mt_shadow_closed;

#pragma mark - helpers

/**
 * The vnode-op vector of vp (the field found by layout discovery).
 * Context: any; never blocks.
 */
static inline vnop_t *mt_vector_of(vnode_t vp)
{
    return *(vnop_t *const *)(const void *)((const char *)vp + mt_g.v_op_off);
}

/**
 * The vector index of op (vdesc_offset, assigned by the kernel at boot).
 * Context: any; never blocks.
 */
static inline int mt_desc_offset(uint32_t op)
{
    switch (op) {
    case MT_VOP_MMAP:
        return vnop_mmap_desc.vdesc_offset;
    case MT_VOP_PAGEIN:
        return vnop_pagein_desc.vdesc_offset;
    case MT_VOP_CLOSE:
        return vnop_close_desc.vdesc_offset;
    default:
        return vnop_mnomap_desc.vdesc_offset;
    }
}

/**
 * Writes the type name of vp's mount ("apfs", "nullfs") into name, NUL
 * terminated; empty when vp has no mount. Read from the mount's statfs
 * (f_fstypename, copied from the vfstable at mount: mount_common,
 * bsd/vfs/vfs_syscalls.c), not with vfs_name, which dereferences the
 * mount's vfstable: the dead mount a reclaimed vnode points to has none
 * (bsd/vfs/vfs_init.c), and its statfs reads as an empty name.
 * Context: any; no lock, never blocks.
 */
static void mt_fstype_of(vnode_t vp, char name[MFSNAMELEN + 1])
{
    memset(name, 0, MFSNAMELEN + 1);
    mount_t mp = vnode_mount(vp);
    struct vfsstatfs *st = mp != NULL ? vfs_statfs(mp) : NULL;
    if (st != NULL) {
        /* f_fstypename holds at most MFSNAMELEN characters and its NUL. */
        memcpy(name, st->f_fstypename, MFSNAMELEN);
    }
    name[MFSNAMELEN] = '\0';
}

/**
 * Reads vec's fingerprint entries (see MT_FINGERPRINT_COUNT).
 * Context: any; vec allocated (the caller holds an iocount on a vnode
 * using it, so vfs_fsremove cannot free it); never blocks.
 */
static void mt_fingerprint_read(const vnop_t *vec, vnop_t *fp)
{
    fp[0] = __atomic_load_n(&vec[vnop_lookup_desc.vdesc_offset], __ATOMIC_RELAXED);
    fp[1] = __atomic_load_n(&vec[vnop_reclaim_desc.vdesc_offset], __ATOMIC_RELAXED);
}

/**
 * The original entry op of vp's vector, from the core's table.
 * @return the original, or NULL when the vector is unknown (vnode cleaned
 *         between dispatch and this lookup, or the core is gone).
 * Context: any hook; lock-free.
 */
static vnop_t mt_original(const struct mt_core *core, vnode_t vp, uint32_t op)
{
    uint64_t o = mt_core_vector_original(core, (uint64_t)(uintptr_t)mt_vector_of(vp), op);
    return (vnop_t)(uintptr_t)o;
}

/**
 * The shim's current entry for vec: the last one appended.
 * @return it, or NULL when vec was never hooked.
 * Context: any; lock-free (acquire on the length), never blocks.
 */
static const struct mt_shadow_entry *mt_shadow_last(const vnop_t *vec)
{
    for (uint32_t i = __atomic_load_n(&mt_shadow_len, __ATOMIC_ACQUIRE); i > 0; i--) {
        if (mt_shadow[i - 1].vector == vec) {
            return &mt_shadow[i - 1];
        }
    }
    return NULL;
}

/**
 * Appends vec's originals and fingerprint to the shim's copy, unless its
 * last entry for vec already holds them (a filesystem type mounted again).
 * @return 0, or -1 when the copy is full (the vector is then not hooked).
 * Context: thread context, under the patch lock.
 */
static int mt_shadow_add(const vnop_t *vec, const vnop_t *originals, const vnop_t *fingerprint,
                         const char *fstype)
{
    uint32_t n = mt_shadow_len;
    const struct mt_shadow_entry *last = mt_shadow_last(vec);
    if (last != NULL) {
        int same = 1;
        for (uint32_t op = 0; op < MT_VOP__COUNT; op++) {
            same &= last->originals[op] == originals[op];
        }
        for (uint32_t i = 0; i < MT_FINGERPRINT_COUNT; i++) {
            same &= last->fingerprint[i] == fingerprint[i];
        }
        same &= strncmp(last->fstype, fstype, sizeof(last->fstype)) == 0;
        if (same) {
            return 0;
        }
    }
    if (n >= MT_SHADOW_MAX) {
        return -1;
    }
    mt_shadow[n].vector = vec;
    for (uint32_t op = 0; op < MT_VOP__COUNT; op++) {
        mt_shadow[n].originals[op] = originals[op];
    }
    for (uint32_t i = 0; i < MT_FINGERPRINT_COUNT; i++) {
        mt_shadow[n].fingerprint[i] = fingerprint[i];
    }
    memcpy(mt_shadow[n].fstype, fstype, sizeof(mt_shadow[n].fstype));
    __atomic_store_n(&mt_shadow_len, n + 1, __ATOMIC_RELEASE);
    return 0;
}

/**
 * The original entry op of vp's vector from the shim's copy: for a hook
 * the core's table could not answer.
 * @return the original, or NULL when stop has closed the copy or no vector
 *         at that address was ever hooked.
 * Context: any hook, counted in flight; lock-free, never blocks.
 */
static vnop_t mt_shadow_original(vnode_t vp, uint32_t op)
{
    if (__atomic_load_n(&mt_shadow_closed, __ATOMIC_SEQ_CST)) {
        return NULL;
    }
    const struct mt_shadow_entry *e = mt_shadow_last(mt_vector_of(vp));
    return e != NULL && op < MT_VOP__COUNT ? e->originals[op] : NULL;
}

/**
 * Opens or closes the shim's copy of the originals to hooks (stop closes
 * it before its last drain; a refused stop opens it again).
 * Context: thread context (stop).
 */
void mt_vnops_shadow_close(int closed)
{
    __atomic_store_n(&mt_shadow_closed, closed, __ATOMIC_SEQ_CST);
}

/* mt_event_base stores every field of this layout one by one; a new field
 * must be set there too. */
_Static_assert(sizeof(struct mt_event) == 96, "mt_event_base sets every field");

/**
 * Fills every field of a vnode event: what every kind has, and 0 in the
 * kind-specific ones the trampoline may set next (and the ones the end
 * sets). Field by field, not a memset of the whole event: the memset was a
 * string store costing more than all of these together.
 * Context: any hook; never blocks.
 */
static void mt_event_base(struct mt_event *ev, uint32_t kind, uint32_t pid, vnode_t vp)
{
    ev->kind = kind;
    ev->pid = pid;
    ev->tid = thread_tid(current_thread());
    ev->timestamp_ns = mt_now_ns();
    ev->duration_ns = 0;
    ev->vnode_ptr = (uint64_t)(uintptr_t)vp;
    ev->vid = vnode_vid(vp);
    ev->error = 0;
    ev->offset = 0;
    ev->size = 0;
    mt_counts_snapshot(vp, ev); /* usecount, kusecount, iocount, count_method */
    ev->prot = 0;
    ev->maxprot = 0;
    ev->flags = 0;
    ev->reserved0 = 0;
}

#pragma mark - path pool

/**
 * Claims a free path buffer.
 * @return its index, or -1 when all are in use.
 * Context: any; lock-free (one CAS), never blocks.
 */
static int mt_path_claim(void)
{
    uint32_t full = MT_PATH_POOL >= 32 ? 0xffffffffu : (1u << MT_PATH_POOL) - 1u;
    uint32_t cur = __atomic_load_n(&mt_g.path_busy, __ATOMIC_RELAXED);
    for (;;) {
        if ((cur & full) == full) {
            return -1;
        }
        int i = __builtin_ctz(~cur);
        if (__atomic_compare_exchange_n(&mt_g.path_busy, &cur, cur | (1u << i), 1,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            return i;
        }
    }
}

/**
 * Gives a path buffer back.
 * Context: any; never blocks.
 */
static void mt_path_release(int i)
{
    __atomic_fetch_and(&mt_g.path_busy, ~(1u << i), __ATOMIC_RELEASE);
}

/**
 * Records a PATH record for ev's vnode, using a preallocated buffer; when
 * none is free the path is skipped and counted.
 * Context: the VNOP_MMAP hook only (vn_getpath may sleep); never pagein.
 */
static void mt_record_path(const struct mt_core *core, vnode_t vp, const struct mt_event *ev,
                           uint32_t hint)
{
    if (!mt_core_wants(core, MT_KIND_PATH, ev->pid) || mt_g.path_pool == NULL) {
        return;
    }
    int i = mt_path_claim();
    if (i < 0) {
        MT_INC(&mt_g.paths_skipped);
        return;
    }
    char *buf = mt_g.path_pool + (size_t)i * MAXPATHLEN;
    int len = MAXPATHLEN;
    if (vn_getpath(vp, buf, &len) == 0) {
        buf[MAXPATHLEN - 1] = '\0';
        mt_core_record_path(core, hint, ev, (const uint8_t *)buf, strlen(buf));
    }
    mt_path_release(i);
}

#pragma mark - trampolines

/* One hook invocation: what the prologue found, for the epilogue. */
struct mt_hook {
    const struct mt_core *core;
    vnop_t orig;
    int want;
    uint32_t slot; /* the counter slot mt_enter used, for mt_leave */
    uint32_t cpu;  /* mt_entry_cpu at entry: the slot's and the shard hint's */
    struct mt_event ev; /* filled only when want */
};

/**
 * Prologue of every trampoline: counts the hook in flight, finds the
 * original and, when the config wants this kind from this pid, starts the
 * event (counts snapshot and clock BEFORE the original runs). An original
 * only the shim's copy knows (stop or an unmount restored the entry after
 * XNU dispatched to us) is called untraced, still counted in flight so
 * that stop waits for it.
 * @return 1, or 0 when the original is unknown (stop's last drain has
 *         begun, or the vector was never hooked): the hook has then left
 *         again and the caller fails open with its op's errno.
 * Context: any hook; never blocks.
 */
static int mt_hook_begin(struct mt_hook *h, vnode_t vp, uint32_t op, uint32_t kind)
{
    h->cpu = mt_entry_cpu();
    h->slot = mt_enter_at(h->cpu);
    h->core = mt_core_ref();
    h->orig = mt_original(h->core, vp, op);
    if (h->orig == NULL) {
        /* Dispatched to us before stop or an unmount restored the entry:
         * the filesystem's own operation, untraced. */
        h->orig = mt_shadow_original(vp, op);
        h->want = 0;
        if (h->orig != NULL) {
            MT_INC(&mt_g.untraced_calls);
            return 1;
        }
        /* Fail open: an unexpected state never breaks the operation. */
        mt_error();
        mt_leave(h->slot);
        return 0;
    }
    uint32_t pid = (uint32_t)proc_selfpid();
    /* A filesystem's vector serves every vnode type; CLOSE is for files. */
    int file = kind != MT_KIND_CLOSE || vnode_vtype(vp) == VREG;
    h->want = file && mt_core_wants(h->core, kind, pid);
    if (h->want) {
        mt_event_base(&h->ev, kind, pid, vp);
    }
    return 1;
}

/**
 * Epilogue of every trampoline: finishes and records the event (for a map,
 * its path first, so a reader can name the MMAP as it arrives), then leaves.
 * @param path_vp the vnode to name, or NULL (never on the paging path).
 * @return err, the original's result.
 * Context: the trampoline's; sleeps only in vn_getpath when path_vp is set.
 */
static int mt_hook_end(struct mt_hook *h, int err, vnode_t path_vp)
{
    if (h->want) {
        h->ev.duration_ns = mt_now_ns() - h->ev.timestamp_ns;
        h->ev.error = err;
        uint32_t hint = mt_shard_hint_at(h->ev.tid, h->cpu);
        mt_proc_note(h->core, hint, &h->ev);
        if (path_vp != NULL) {
            mt_record_path(h->core, path_vp, &h->ev, hint);
        }
        mt_core_record(h->core, hint, &h->ev);
    }
    mt_leave(h->slot);
    return err;
}

/**
 * VNOP_MMAP trampoline: every map of a file (mmap(2), exec, loader).
 * @param ap struct vnop_mmap_args.
 * @return the original's result; ENOTSUP (what a filesystem without
 *         VNOP_MMAP returns, ignored by ubc_map) if the original is unknown.
 * Context: thread context (ubc_map); does not allocate; may sleep only in
 *          vn_getpath, as the mmap path allows.
 */
static int mt_vnop_mmap_hook(void *ap)
{
    struct vnop_mmap_args *a = ap;
    struct mt_hook h;
    if (!mt_hook_begin(&h, a->a_vp, MT_VOP_MMAP, MT_KIND_MMAP)) {
        return ENOTSUP;
    }
    if (h.want) {
        h.ev.prot = (uint32_t)a->a_fflags;
    }
    return mt_hook_end(&h, h.orig(ap), a->a_vp);
}

/**
 * Fails a pagein whose original is unknown. The UPL (a_pl, busy pages the
 * callee must commit or abort) is released here: vnode_pagein aborts it
 * itself only for EAGAIN and EPERM (bsd/vm/vnode_pager.c, xnu-11417.121.6),
 * so on EIO its pages would stay busy and the faulting threads wait forever.
 * PAGEINV2 filesystems get no UPL (a_pl == NULL); with UPL_NOCOMMIT the
 * caller releases it.
 * @return EIO (the fault fails, as on a dead vnode).
 * Context: paging path; ubc_upl_abort_range does not sleep here.
 */
static int mt_pagein_fail_open(const struct vnop_pagein_args *a)
{
    if (a->a_pl != NULL && !(a->a_flags & UPL_NOCOMMIT)) {
        (void)ubc_upl_abort_range(a->a_pl, a->a_pl_offset, (upl_size_t)a->a_size,
                                  UPL_ABORT_FREE_ON_EMPTY | UPL_ABORT_ERROR);
    }
    return EIO;
}

/**
 * VNOP_PAGEIN trampoline: one cluster read caused by a fault.
 * @param ap struct vnop_pagein_args.
 * @return the original's result; EIO if the original is unknown (the
 *         fault fails, as on a dead vnode; its UPL released).
 * Context: paging path: never sleeps, allocates or takes a lock here
 *          (the isinuse fallback takes the vnode's spin lock in the KPI).
 */
static int mt_vnop_pagein_hook(void *ap)
{
    struct vnop_pagein_args *a = ap;
    struct mt_hook h;
    if (!mt_hook_begin(&h, a->a_vp, MT_VOP_PAGEIN, MT_KIND_PAGEIN)) {
        return mt_pagein_fail_open(a);
    }
    if (h.want) {
        h.ev.offset = a->a_f_offset;
        h.ev.size = (uint64_t)a->a_size;
        h.ev.flags = (uint32_t)a->a_flags;
    }
    return mt_hook_end(&h, h.orig(ap), NULL);
}

/**
 * VNOP_MNOMAP trampoline: the last mapping of the file went away.
 * @param ap struct vnop_mnomap_args.
 * @return the original's result; ENOTSUP (ignored by ubc_unmap) if the
 *         original is unknown.
 * Context: thread context (munmap, task exit, vclean); never allocates.
 */
static int mt_vnop_mnomap_hook(void *ap)
{
    struct vnop_mnomap_args *a = ap;
    struct mt_hook h;
    if (!mt_hook_begin(&h, a->a_vp, MT_VOP_MNOMAP, MT_KIND_MNOMAP)) {
        return ENOTSUP;
    }
    return mt_hook_end(&h, h.orig(ap), NULL);
}

/**
 * VNOP_CLOSE trampoline: vn_close on the last close of an open file, right
 * before vnode_rele_ext drops the open's usecount (bsd/vfs/vfs_vnops.c,
 * xnu-7195.141.2 and xnu-11417.121.6); also vclean's close of an active
 * vnode at a forced unmount, and kernel-internal closes. The vector is
 * the filesystem's for every vnode type: only regular files are recorded.
 * @param ap struct vnop_close_args.
 * @return the original's result; 0 if the original is unknown (vn_close's
 *         callers ignore it or only report it; the usecount goes anyway).
 * Context: thread context (close(2), exit, exec, unmount); never allocates.
 */
static int mt_vnop_close_hook(void *ap)
{
    struct vnop_close_args *a = ap;
    struct mt_hook h;
    if (!mt_hook_begin(&h, a->a_vp, MT_VOP_CLOSE, MT_KIND_CLOSE)) {
        return 0;
    }
    if (h.want) {
        h.ev.flags = (uint32_t)a->a_fflag;
    }
    return mt_hook_end(&h, h.orig(ap), NULL);
}

#pragma mark - patching

/* Whether this load has said a vector found no room (under the patch
 * lock; cleared by mt_vnops_init): said once, then only counted. */
static int mt_table_full_logged;

/**
 * Says, once a load, that a filesystem type stays untraced for want of
 * room in the vector tables: stats.errors alone does not say which or why.
 * Context: thread context, under the patch lock (IOLog may block briefly;
 * no hook holds this lock).
 */
static void mt_log_untraced_type(const char *fstype)
{
    if (mt_table_full_logged) {
        return;
    }
    mt_table_full_logged = 1;
    IOLog("maptrace: no room for another vnode-op vector (the table holds %u); filesystem type "
          "\"%s\" and later new ones stay untraced until the kext is reloaded\n",
          (unsigned)MT_CORE_MAX_VECTORS, fstype);
}

/**
 * Hooks one vector: originals into the core's table first, then the
 * trampolines into the vector. An op left out of ops keeps its entry and
 * has original 0 in the table and the shim's copy (never swapped).
 * @param core the core (its table receives the originals).
 * @param vec  the vector (not yet in the core's table).
 * @param ops  the ops to hook (bit 1 << op); always MT_VOP_PAGEIN.
 * @param fstype the type of the mount it was seen from (mt_fstype_of).
 * Context: thread context, under the patch lock.
 */
static void mt_patch_vector(const struct mt_core *core, vnop_t *vec, uint32_t ops,
                            const char *fstype)
{
    uint64_t originals[MT_VOP__COUNT];
    vnop_t entries[MT_VOP__COUNT];
    for (uint32_t op = 0; op < MT_VOP__COUNT; op++) {
        originals[op] = 0;
        entries[op] = NULL;
        if (!(ops & (1u << op))) {
            continue;
        }
        vnop_t cur = __atomic_load_n(&vec[mt_desc_offset(op)], __ATOMIC_ACQUIRE);
        if (cur == NULL || cur == mt_hooks[op]) {
            /* Not a vector we can hook safely; leave it alone. */
            mt_error();
            return;
        }
        entries[op] = cur;
        originals[op] = (uint64_t)(uintptr_t)cur;
    }
    vnop_t fingerprint[MT_FINGERPRINT_COUNT];
    mt_fingerprint_read(vec, fingerprint);
    if (mt_shadow_add(vec, entries, fingerprint, fstype) != 0) {
        /* No room to keep the originals where a late hook finds them. */
        mt_error();
        mt_log_untraced_type(fstype);
        return;
    }
    int err = mt_core_vector_insert(core, (uint64_t)(uintptr_t)vec, originals, mt_now_ns());
    if (err != MT_OK) {
        /* Table full (or a duplicate): the vector stays unhooked. */
        mt_error();
        if (err == MT_ENOSPC) {
            mt_log_untraced_type(fstype);
        }
        return;
    }
    for (uint32_t op = 0; op < MT_VOP__COUNT; op++) {
        if (ops & (1u << op)) {
            __atomic_store_n(&vec[mt_desc_offset(op)], mt_hooks[op], __ATOMIC_RELEASE);
        }
    }
    MT_INC(&mt_g.vectors_patched);
}

/* Every op, for a filesystem that holds its files' data. */
#define MT_VOPS_ALL ((1u << MT_VOP__COUNT) - 1u)

/**
 * The ops to hook in a vector of a mount of type fstype (mt_fstype_of).
 * nullfs and bindfs (built into XNU:
 * bsd/vfs/vfs_conf.c; nullfs since xnu-6153, bindfs since xnu-7195.141.2)
 * call VNOP_MMAP, VNOP_MNOMAP and VNOP_CLOSE on the lower vnode through its
 * own vector (bsd/miscfs/nullfs/null_vnops.c:919, 945, 374;
 * bsd/miscfs/bindfs/bind_vnops.c:437, 456, 173; xnu-11417.121.6): hooking
 * theirs too would record each twice and nest two trampolines on one
 * stack, so those are recorded once, at the lower file. Their VNOP_PAGEIN
 * reads the lower file with VNOP_READ (null_vnops.c:1057, bind_vnops.c:552):
 * no page-in reaches the lower vector, so theirs is hooked.
 * Context: any; never blocks.
 */
static uint32_t mt_vops_to_hook(const char *fstype)
{
    if (strncmp(fstype, "nullfs", MFSNAMELEN + 1) == 0 ||
        strncmp(fstype, "bindfs", MFSNAMELEN + 1) == 0) {
        return 1u << MT_VOP_PAGEIN;
    }
    return MT_VOPS_ALL;
}

static uint32_t mt_vectors_swap_one(vnop_t *vec, const uint64_t *originals, int to_hooks);

/* What a vector in the core's table holds now. */
enum mt_vector_state {
    MT_VECTOR_OURS,     /* one of our trampolines at least: hooked */
    MT_VECTOR_STALE,    /* another filesystem at a freed vector's address */
    MT_VECTOR_ORIGINAL, /* the recorded originals: the type added again */
    MT_VECTOR_FOREIGN,  /* another kext's hooks over ours: left alone */
};

/**
 * Tells what the table vector vec holds, against its recorded originals
 * (0 for an op not hooked in it) and fingerprint. A vector is freed with
 * no word of ours removed only by an unmount that skipped the MAC check
 * (vfs_unmountbyfsid, submounts, vfs_unmountall: bsd/vfs/vfs_syscalls.c
 * and vfs_subr.c, xnu-11417.121.6) followed by vfs_fsremove; vfs_fsadd may
 * then reuse its memory. Stale needs proof: lookup and reclaim both
 * other than recorded AND vp's mount of another type than the one vec was
 * hooked from. A kext interposing on every entry (lookup and reclaim
 * too) changes no mount's type, so it is never taken for a new
 * filesystem, whose trampolines recorded as originals would call ours
 * again without end; the price is a filesystem of the same type added
 * again with other code (its kext reloaded elsewhere), left untraced and
 * the unload refused until it goes, as for any foreign hook.
 * @param originals the table's originals of vec.
 * @param fstype the type of the mount of the vnode vec was read from.
 * Context: any; vec allocated (the caller holds an iocount on a vnode
 * using it); lock-free reads, the patch lock to act on the answer.
 */
static enum mt_vector_state mt_vector_state(const vnop_t *vec, const uint64_t *originals,
                                            const char *fstype)
{
    int original = 1;
    for (uint32_t op = 0; op < MT_VOP__COUNT; op++) {
        if (originals[op] == 0) {
            continue; /* an op this vector was not hooked for */
        }
        vnop_t cur = __atomic_load_n(&vec[mt_desc_offset(op)], __ATOMIC_ACQUIRE);
        if (cur == mt_hooks[op]) {
            return MT_VECTOR_OURS;
        }
        original &= (uint64_t)(uintptr_t)cur == originals[op];
    }
    const struct mt_shadow_entry *e = mt_shadow_last(vec);
    if (e == NULL) {
        return MT_VECTOR_FOREIGN; /* unknown: never touch it */
    }
    vnop_t fp[MT_FINGERPRINT_COUNT];
    mt_fingerprint_read(vec, fp);
    int all_differ = 1;
    for (uint32_t i = 0; i < MT_FINGERPRINT_COUNT; i++) {
        all_differ &= fp[i] != e->fingerprint[i];
    }
    if (all_differ && strncmp(fstype, e->fstype, sizeof(e->fstype)) != 0) {
        return MT_VECTOR_STALE;
    }
    return original ? MT_VECTOR_ORIGINAL : MT_VECTOR_FOREIGN;
}

/**
 * The table's originals of vec (0 for an op not hooked in it).
 * @return 1, or 0 when vec is not in the table (PAGEIN is hooked in every
 *         vector of the table).
 * Context: any; lock-free.
 */
static int mt_table_originals(const struct mt_core *core, const vnop_t *vec, uint64_t *originals)
{
    for (uint32_t op = 0; op < MT_VOP__COUNT; op++) {
        originals[op] = mt_core_vector_original(core, (uint64_t)(uintptr_t)vec, op);
    }
    return originals[MT_VOP_PAGEIN] != 0;
}

/**
 * Hooks ops of vec if it is new, or if the table's entry for it is stale
 * (another filesystem's vector at its address: the entry is dropped, never
 * written through); puts our trampolines back if it holds the recorded
 * originals again (the same type added again). Another kext's hooks over
 * ours are left alone: recording its trampolines as originals would make
 * each call ours again, without end.
 * Context: thread context, under the patch lock, patching open.
 */
static void mt_vector_seen_locked(const struct mt_core *core, vnop_t *vec, uint32_t ops,
                                  const char *fstype)
{
    uint64_t originals[MT_VOP__COUNT];
    if (!mt_table_originals(core, vec, originals)) {
        mt_patch_vector(core, vec, ops, fstype);
        return;
    }
    switch (mt_vector_state(vec, originals, fstype)) {
    case MT_VECTOR_STALE:
        (void)mt_core_vector_remove(core, (uint64_t)(uintptr_t)vec);
        mt_patch_vector(core, vec, ops, fstype);
        break;
    case MT_VECTOR_ORIGINAL:
        if (mt_vectors_swap_one(vec, originals, 1) != 0) {
            /* Changed under us: back out, as for a foreign hook. */
            (void)mt_vectors_swap_one(vec, originals, 0);
        }
        break;
    default:
        break;
    }
}

/**
 * A vnode was seen (kauth, MAC, the start sweep): hooks its vector if it
 * is new, or if its table entry is stale or its originals are back (see
 * mt_vector_seen_locked). The checks are lock-free; only a vector to patch
 * takes the lock.
 *
 * Never sweeps other mounts from here: the discovery callers run inside
 * open, exec and the kauth listener, where vfs_iterate/vnode_iterate would
 * wait on every mount's iterate lock (held by vflush while it waits for
 * iocounts, by an NFS sync across the network) and on vnodes being torn
 * down (bsd/vfs/vfs_subr.c vnode_iterate, vnode_getiocount,
 * xnu-11417.121.6): an open could hang behind a dead server, and one made
 * from another kext's vnode_iterate callout would take that mount's lock
 * twice (a panic). So a stacking mount (nullfs, bindfs) over a filesystem
 * the kext has not seen yet leaves its maps untraced until a vnode of that
 * filesystem is seen itself; the filesystems mounted at load are swept
 * then, from start.
 * @param vp a vnode the caller holds an iocount on (NULL is ignored).
 * Context: thread context (discovery callbacks, sweep); may block on the
 *          patch lock.
 */
void mt_vnode_seen(vnode_t vp)
{
    const struct mt_core *core = mt_core_ref();
    if (vp == NULL || core == NULL || vnode_vtype(vp) != VREG) {
        return;
    }
    vnop_t *vec = mt_vector_of(vp);
    if (vec == NULL) {
        mt_error();
        return;
    }
    /* PAGEIN is hooked in every vector of the table. */
    if (mt_core_vector_original(core, (uint64_t)(uintptr_t)vec, MT_VOP_PAGEIN) != 0 &&
        __atomic_load_n(&vec[mt_desc_offset(MT_VOP_PAGEIN)], __ATOMIC_RELAXED) ==
            mt_hooks[MT_VOP_PAGEIN]) {
        return; /* hooked: the common case, one lookup */
    }
    char fstype[MFSNAMELEN + 1];
    mt_fstype_of(vp, fstype);
    uint64_t originals[MT_VOP__COUNT];
    if (mt_table_originals(core, vec, originals)) {
        enum mt_vector_state state = mt_vector_state(vec, originals, fstype);
        if (state == MT_VECTOR_OURS || state == MT_VECTOR_FOREIGN) {
            return;
        }
    }
    uint32_t ops = mt_vops_to_hook(fstype);
    lck_mtx_lock(mt_g.patch_lock);
    if (!mt_patch_closed) {
        mt_vector_seen_locked(core, vec, ops, fstype);
    }
    lck_mtx_unlock(mt_g.patch_lock);
}

/**
 * Swaps the hooked entries of one vector: our trampolines back to the
 * originals, or the originals to our trampolines.
 * @return entries holding neither (another kext's), left alone.
 * Context: thread context, under the patch lock.
 */
static uint32_t mt_vectors_swap_one(vnop_t *vec, const uint64_t *originals, int to_hooks)
{
    uint32_t foreign = 0;
    for (uint32_t op = 0; op < MT_VOP__COUNT; op++) {
        vnop_t original = (vnop_t)(uintptr_t)originals[op];
        if (original == NULL) {
            continue; /* an op this vector was not hooked for */
        }
        vnop_t seen = to_hooks ? original : mt_hooks[op];
        vnop_t next = to_hooks ? mt_hooks[op] : original;
        if (!__atomic_compare_exchange_n(&vec[mt_desc_offset(op)], &seen, next, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
            seen != next) {
            mt_error();
            foreign++;
        }
    }
    return foreign;
}

/* One pass of swaps over the vectors in use by live vnodes (stop, resume). */
struct mt_swap_pass {
    int to_hooks;
    uint32_t foreign;              /* entries holding another kext's hook */
    uint8_t seen[MT_CORE_MAX_VECTORS]; /* table index swapped in this pass */
};

/**
 * vnode_iterate callout of a swap pass: swaps the vector of the mount's
 * first vnode (of any type: the root directory, always instantiated, shares
 * its filesystem's vector with the regular files on hfs and apfs) that is
 * in the table. The iocount the iterator holds keeps the mount, so the
 * filesystem is registered and its vector allocated (vfs_fsremove refuses
 * while vfc_refcount > 0, bsd/vfs/kpi_vfs.c, xnu-11417.121.6): only here
 * is writing to a table vector safe.
 * Context: thread context (stop, resume; inside vnode_iterate).
 */
static int mt_swap_vnode(struct vnode *vp, void *arg)
{
    struct mt_swap_pass *pass = arg;
    vnop_t *vec = mt_vector_of(vp);
    uint64_t key = (uint64_t)(uintptr_t)vec;
    int found = 0;
    char fstype[MFSNAMELEN + 1];
    mt_fstype_of(vp, fstype);
    lck_mtx_lock(mt_g.patch_lock);
    uint32_t n = mt_g.core != NULL ? mt_core_vector_count(mt_g.core) : 0;
    for (uint32_t i = 0; i < n && i < MT_CORE_MAX_VECTORS && key != 0; i++) {
        uint64_t addr = 0;
        uint64_t originals[MT_VOP__COUNT];
        if (mt_core_vector_get(mt_g.core, i, &addr, originals) != MT_OK || addr != key) {
            continue;
        }
        found = 1;
        if (!pass->seen[i]) {
            pass->seen[i] = 1;
            if (mt_vector_state(vec, originals, fstype) == MT_VECTOR_STALE) {
                /* Another filesystem's vector now: nothing of ours in it. */
                (void)mt_core_vector_remove(mt_g.core, key);
            } else {
                pass->foreign += mt_vectors_swap_one(vec, originals, pass->to_hooks);
            }
        }
    }
    lck_mtx_unlock(mt_g.patch_lock);
    return found ? VNODE_RETURNED_DONE : VNODE_RETURNED;
}

/**
 * vfs_iterate callout of a swap pass: one mount.
 * Context: thread context (inside vfs_iterate).
 */
static int mt_swap_mount(struct mount *mp, void *arg)
{
    vnode_iterate(mp, 0, mt_swap_vnode, arg);
    return VFS_RETURNED;
}

/**
 * Swaps every table vector in use by a live vnode: our trampolines back to
 * the originals, or the originals to our trampolines. A vector no live
 * vnode uses is never touched: its filesystem may have been removed
 * (vfs_fsremove frees it) or be registered but unmounted.
 * @param to_hooks 1: originals -> trampolines; 0: trampolines -> originals.
 * @param unknown  out: table vectors no live vnode uses (not swapped).
 * @return entries holding another kext's hook (left alone).
 * Context: thread context (stop); takes the patch lock per vector, never
 *          across the iteration (the unmount hook takes them in the other
 *          order: vnode_iterate, then the patch lock).
 */
static uint32_t mt_vectors_swap(int to_hooks, uint32_t *unknown)
{
    static struct mt_swap_pass pass; /* stop is single-threaded */
    memset(&pass, 0, sizeof(pass));
    pass.to_hooks = to_hooks;
    *unknown = 0;
    if (mt_g.core == NULL) {
        return 0;
    }
    vfs_iterate(0, mt_swap_mount, &pass);
    uint32_t n = mt_core_vector_count(mt_g.core);
    for (uint32_t i = 0; i < n && i < MT_CORE_MAX_VECTORS; i++) {
        uint64_t addr = 0;
        if (mt_core_vector_get(mt_g.core, i, &addr, NULL) == MT_OK && addr != 0 && !pass.seen[i]) {
            (*unknown)++;
        }
    }
    return pass.foreign;
}

/* A mount going away: its filesystem type, and whether another mount of
 * that type stays. */
struct mt_going {
    mount_t mp;
    char fsname[MFSNAMELEN + 1];
    int other;
    int busy;
};

/**
 * vfs_iterate callout: notes a mount, other than the one going, of the same
 * filesystem type (it shares the type's vectors).
 * Context: thread context (inside vfs_iterate).
 */
static int mt_going_other_mount(struct mount *mp, void *arg)
{
    struct mt_going *g = arg;
    if (mp == g->mp) {
        return VFS_RETURNED;
    }
    char name[MFSNAMELEN + 1];
    memset(name, 0, sizeof(name));
    vfs_name(mp, name);
    if (strncmp(name, g->fsname, sizeof(name)) == 0) {
        g->other = 1;
        return VFS_RETURNED_DONE;
    }
    return VFS_RETURNED;
}

/**
 * vnode_iterate callout over the mount going away: notes whether a regular
 * file on it is in use (open or mapped). Then the unmount either fails
 * (EBUSY, vflush without FORCECLOSE) or is forced, and a forced one's
 * vclean calls VNOP_MNOMAP for each mapped file (bsd/vfs/vfs_subr.c vclean
 * -> ubc_destroy_named -> ... -> ubc_unmap, xnu-11417.121.6): the hooks
 * must stay for those last unmaps to be traced.
 * Context: thread context (inside vnode_iterate, iocount held).
 */
static int mt_going_busy(struct vnode *vp, void *arg)
{
    struct mt_going *g = arg;
    if (vnode_vtype(vp) == VREG && vnode_isinuse(vp, 0)) {
        g->busy = 1;
        return VNODE_RETURNED_DONE;
    }
    return VNODE_RETURNED;
}

/**
 * vnode_iterate callout over the mount going away: the first regular
 * vnode's vector, if hooked, gets its originals back and leaves the core's
 * table, while the iterator's iocount keeps the mount (so the filesystem is
 * registered and the vector allocated). A later mount of the type, or a new
 * vector at the same address, is hooked afresh. A vector another kext
 * hooked over stays hooked and in the table.
 * Context: thread context (inside vnode_iterate, iocount held).
 */
static int mt_going_vnode(struct vnode *vp, void *arg)
{
    (void)arg;
    if (vnode_vtype(vp) != VREG) {
        return VNODE_RETURNED;
    }
    const struct mt_core *core = mt_core_ref();
    vnop_t *vec = mt_vector_of(vp);
    if (core == NULL || vec == NULL) {
        return VNODE_RETURNED_DONE;
    }
    uint64_t key = (uint64_t)(uintptr_t)vec;
    uint64_t originals[MT_VOP__COUNT];
    char fstype[MFSNAMELEN + 1];
    mt_fstype_of(vp, fstype);
    lck_mtx_lock(mt_g.patch_lock);
    if (!mt_patch_closed && mt_table_originals(core, vec, originals)) {
        if (mt_vector_state(vec, originals, fstype) == MT_VECTOR_STALE) {
            /* Another filesystem's vector now: forget the old one's. */
            (void)mt_core_vector_remove(core, key);
        } else if (mt_vectors_swap_one(vec, originals, 0) == 0) {
            (void)mt_core_vector_remove(core, key);
        } else {
            /* Someone hooked over us: we stay under them, still hooked. */
            (void)mt_vectors_swap_one(vec, originals, 1);
        }
    }
    lck_mtx_unlock(mt_g.patch_lock);
    return VNODE_RETURNED_DONE;
}

/**
 * A mount is about to be unmounted (MAC mount_check_umount; the caller
 * holds an iocount on its root vnode, so its filesystem is registered):
 * when it is the last mount of its type and no regular file on it is in
 * use, its hooked vector is restored and forgotten now, since once
 * unmounted the type's kext may vfs_fsremove (free) it and no later hook
 * runs before that. With a file in use the hooks stay, so that a forced
 * unmount's last unmaps (vclean's VNOP_MNOMAPs) are traced; the vector
 * then stays in the table with no live vnode, and stop, which writes only
 * through a live vnode, refuses to unload until a mount of that type is
 * seen again (never a write into a vector that may have been freed).
 * Cost, for a last mount with nothing in use: after an unmount that still
 * fails (EBUSY), the volume is untraced until a vnode of it is seen again.
 * A hook that read our entry just before the restore and looks up its
 * original after it finds it in the shim's copy (mt_shadow).
 * Context: thread context (unmount(2)); may block.
 */
void mt_vnops_mount_going(mount_t mp)
{
    if (mp == NULL || mt_core_ref() == NULL) {
        return;
    }
    struct mt_going g;
    memset(&g, 0, sizeof(g));
    g.mp = mp;
    vfs_name(mp, g.fsname);
    vfs_iterate(0, mt_going_other_mount, &g);
    if (g.other) {
        return;
    }
    vnode_iterate(mp, 0, mt_going_busy, &g);
    if (!g.busy) {
        vnode_iterate(mp, 0, mt_going_vnode, NULL);
    }
}

/**
 * Closes patching, then puts every original entry back where a trampoline
 * of ours still sits in a vector a live vnode uses.
 * @param unknown out: vectors in the table no live vnode uses, left alone.
 * @return entries another kext hooked over ours (left alone). The kext
 *         must not unload while either is non-zero: that kext calls our
 *         trampoline as its original (bsd/vfs/kpi_vfs.c dispatches through
 *         whatever is in the slot), and an unknown vector may still hold
 *         our trampolines for its next mount.
 * Context: thread context (stop); takes the patch lock.
 */
uint32_t mt_vnops_restore(uint32_t *unknown)
{
    lck_mtx_lock(mt_g.patch_lock);
    mt_patch_closed = 1;
    lck_mtx_unlock(mt_g.patch_lock);
    return mt_vectors_swap(0, unknown);
}

/**
 * Puts our trampolines back into every table vector a live vnode uses and
 * reopens patching: an unload was refused and the kext stays, tracing.
 * Context: thread context (stop); takes the patch lock.
 */
void mt_vnops_repatch(void)
{
    uint32_t unknown = 0;
    (void)mt_vectors_swap(1, &unknown);
    lck_mtx_lock(mt_g.patch_lock);
    mt_patch_closed = 0;
    lck_mtx_unlock(mt_g.patch_lock);
}

#pragma mark - sweep

/**
 * vnode_iterate callout: patches the vector of the mount's first regular
 * vnode; a filesystem's regular files share one vector, so one is enough.
 * Context: thread context (start, inside vnode_iterate, iocount held).
 */
static int mt_sweep_vnode(struct vnode *vp, void *arg)
{
    (void)arg;
    if (vnode_vtype(vp) != VREG) {
        return VNODE_RETURNED;
    }
    mt_vnode_seen(vp);
    return VNODE_RETURNED_DONE;
}

/**
 * vfs_iterate callout: sweeps one mount.
 * Context: thread context (start, inside vfs_iterate).
 */
static int mt_sweep_mount(struct mount *mp, void *arg)
{
    vnode_iterate(mp, 0, mt_sweep_vnode, arg);
    return VFS_RETURNED;
}

/**
 * Patches the vectors of filesystems mounted before the kext loaded.
 * Context: thread context (start); may block.
 */
void mt_vnops_sweep(void)
{
    vfs_iterate(0, mt_sweep_mount, NULL);
}

#pragma mark - init / fini

/**
 * Fills the trampoline table and allocates the path pool.
 * @return 0 or ENOMEM.
 * Context: thread context (start); may block.
 */
int mt_vnops_init(void)
{
    mt_patch_closed = 0;
    /* No hook runs yet (nothing patched), and a previous load's copy is
     * stale. */
    mt_shadow_len = 0;
    mt_shadow_closed = 0;
    mt_table_full_logged = 0;
    mt_hooks[MT_VOP_MMAP] = mt_vnop_mmap_hook;
    mt_hooks[MT_VOP_PAGEIN] = mt_vnop_pagein_hook;
    mt_hooks[MT_VOP_MNOMAP] = mt_vnop_mnomap_hook;
    mt_hooks[MT_VOP_CLOSE] = mt_vnop_close_hook;
    mt_g.path_busy = 0;
    mt_g.path_pool = IOMalloc((vm_size_t)MT_PATH_POOL * MAXPATHLEN);
    return mt_g.path_pool == NULL ? ENOMEM : 0;
}

/**
 * Frees the path pool (stop, after the hooks drained).
 * Context: thread context (stop).
 */
void mt_vnops_fini(void)
{
    if (mt_g.path_pool != NULL) {
        IOFree(mt_g.path_pool, (vm_size_t)MT_PATH_POOL * MAXPATHLEN);
        mt_g.path_pool = NULL;
    }
}
