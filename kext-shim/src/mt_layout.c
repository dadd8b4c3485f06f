/*
 * mt_layout.c - struct vnode layout discovery at start, and the vnode
 * count snapshot the hooks take.
 *
 * Role: struct vnode is private and changes between releases. At start:
 *   1. v_op: register a throw-away filesystem (vfs_fsadd) whose vector the
 *      kernel builds for us, create one vnode with it (vnode_create), and
 *      find the one offset in the vnode that holds that vector's address.
 *   2. v_usecount/v_kusecount/v_iocount: read at their LP64 offsets (stable
 *      since 10.12), but only trusted after they agree with the public
 *      vnode_isinuse() while the shim moves the counts (vnode_ref,
 *      vnode_getwithref) on the probe vnode and on a few mounted vnodes.
 *      Otherwise the hooks fall back to a vnode_isinuse() binary search,
 *      which measures v_usecount - v_kusecount (not the usecount; iocount
 *      unknown). Records say which (count_method); maptrace_abi.h says what
 *      each count field holds per method. v_kusecount is only validated
 *      through that difference: no public KPI moves it alone.
 * If 1 fails, start refuses: without v_op nothing can be hooked.
 *
 * Calls no mt_core_* function (the method is handed to mt_core_init).
 */
#include "mt_shim.h"

/* Largest count the isinuse search looks for; a larger usecount saturates. */
#define MT_ISINUSE_MAX 65535
/* A plausible count read at a validated offset is below this. */
#define MT_COUNT_SANE (1 << 20)
/* Mounted vnodes the offsets are also checked against. */
#define MT_SAMPLE_VNODES 8
/* Retries of one sample check, since counts move under us. */
#define MT_SAMPLE_TRIES 3

#pragma mark - probe filesystem

/* The probe filesystem: its vector is built by vfs_fsadd into mt_probe_vector.
 * The tables are writable and filled in code at start (arm64e signs
 * function pointers taken in code, never those in static initializers). */
static int (**mt_probe_vector)(void *);
static struct vnodeopv_entry_desc mt_probe_entries[4];
static struct vnodeopv_desc mt_probe_opv;
static struct vnodeopv_desc *mt_probe_opvs[1];
static struct vfsops mt_probe_vfsops;
static struct vfs_fsentry mt_probe_fsentry;

/**
 * VNOP_RECLAIM of the probe vnode: nothing to free (no fsnode).
 * @param ap struct vnop_reclaim_args.
 * @return 0 (a failing reclaim panics XNU).
 * Context: thread context (vnode_put of the probe vnode).
 */
static int mt_probe_reclaim(void *ap)
{
    (void)ap;
    return 0;
}

/**
 * VNOP_INACTIVE of the probe vnode: nothing to do.
 * @param ap struct vnop_inactive_args.
 * @return 0.
 * Context: thread context (vnode_rele/vnode_put of the probe vnode).
 */
static int mt_probe_inactive(void *ap)
{
    (void)ap;
    return 0;
}

/**
 * Whether vnode_isinuse agrees that (usecount - kusecount) is exactly n.
 * Context: thread context; takes the vnode lock inside vnode_isinuse.
 */
static int mt_isinuse_is(vnode_t vp, int32_t n)
{
    return vnode_isinuse(vp, n - 1) != 0 && vnode_isinuse(vp, n) == 0;
}

/**
 * Checks the count offsets on the probe vnode while moving its counts.
 * @param vp the probe vnode, with one iocount held by the caller.
 * @return 1 when every read agreed with what the KPIs did.
 * Context: thread context (start); may block.
 */
static int mt_counts_check_probe(vnode_t vp)
{
    int32_t u0 = mt_read_count(vp, MT_OFF_USECOUNT);
    int32_t k0 = mt_read_count(vp, MT_OFF_KUSECOUNT);
    int32_t i0 = mt_read_count(vp, MT_OFF_IOCOUNT);
    if (u0 < 0 || k0 < 0 || k0 > u0 || i0 < 1 || u0 >= MT_COUNT_SANE || i0 >= MT_COUNT_SANE) {
        return 0;
    }
    if (!mt_isinuse_is(vp, u0 - k0)) {
        return 0;
    }
    int ok = 1;
    /* usecount: +1 through vnode_ref must show at the offset and in isinuse. */
    if (vnode_ref(vp) != 0) {
        return 0;
    }
    if (mt_read_count(vp, MT_OFF_USECOUNT) != u0 + 1 ||
        mt_read_count(vp, MT_OFF_KUSECOUNT) != k0 || !mt_isinuse_is(vp, u0 + 1 - k0)) {
        ok = 0;
    }
    vnode_rele(vp);
    if (mt_read_count(vp, MT_OFF_USECOUNT) != u0) {
        ok = 0;
    }
    /* iocount: +1 through vnode_getwithref, -1 through vnode_put. */
    if (vnode_getwithref(vp) != 0) {
        return 0;
    }
    if (mt_read_count(vp, MT_OFF_IOCOUNT) != i0 + 1) {
        ok = 0;
    }
    vnode_put(vp);
    if (mt_read_count(vp, MT_OFF_IOCOUNT) != i0) {
        ok = 0;
    }
    return ok;
}

/* Progress of the mounted-vnode sample check. */
struct mt_sample {
    uint32_t checked;
    uint32_t failed;
};

/**
 * vnode_iterate callout: checks one mounted regular vnode (the iterator
 * holds an iocount on it).
 * Context: thread context (start, inside vnode_iterate).
 */
static int mt_sample_vnode(struct vnode *vp, void *arg)
{
    struct mt_sample *s = arg;
    if (vnode_vtype(vp) != VREG) {
        return VNODE_RETURNED;
    }
    int good = 0;
    for (int t = 0; t < MT_SAMPLE_TRIES && !good; t++) {
        int32_t u = mt_read_count(vp, MT_OFF_USECOUNT);
        int32_t k = mt_read_count(vp, MT_OFF_KUSECOUNT);
        int32_t i = mt_read_count(vp, MT_OFF_IOCOUNT);
        good = u >= 0 && k >= 0 && k <= u && u < MT_COUNT_SANE && i >= 1 &&
               i < MT_COUNT_SANE && mt_isinuse_is(vp, u - k);
    }
    s->checked++;
    if (!good) {
        s->failed++;
    }
    return s->checked >= MT_SAMPLE_VNODES ? VNODE_RETURNED_DONE : VNODE_RETURNED;
}

/**
 * vfs_iterate callout: samples the vnodes of one mount.
 * Context: thread context (start, inside vfs_iterate).
 */
static int mt_sample_mount(struct mount *mp, void *arg)
{
    struct mt_sample *s = arg;
    vnode_iterate(mp, 0, mt_sample_vnode, arg);
    return s->checked >= MT_SAMPLE_VNODES ? VFS_RETURNED_DONE : VFS_RETURNED;
}

/**
 * Finds v_op in the probe vnode.
 * @param vp the probe vnode.
 * @return 0, or ENOENT when the vector address is not found exactly once.
 * Context: thread context (start).
 */
static int mt_find_v_op(vnode_t vp)
{
    uintptr_t want = (uintptr_t)mt_probe_vector;
    size_t found = 0;
    int hits = 0;
    for (size_t off = 0; off + sizeof(uintptr_t) <= MT_VNODE_SCAN_BYTES; off += sizeof(uintptr_t)) {
        uintptr_t v = *(const uintptr_t *)(const void *)((const char *)vp + off);
        if (v == want) {
            found = off;
            hits++;
        }
    }
    if (hits != 1) {
        return ENOENT;
    }
    mt_g.v_op_off = found;
    return 0;
}

/**
 * Discovers the vnode layout (see the file comment) and sets
 * mt_g.v_op_off and mt_g.probe_method.
 * @return 0, or an errno value with nothing left registered.
 * Context: thread context (start); may block.
 */
int mt_layout_discover(void)
{
    /* The probe vector: reclaim and inactive succeed, the rest is the
     * kernel's default (ENOTSUP). */
    memset(mt_probe_entries, 0, sizeof(mt_probe_entries));
    mt_probe_entries[0].opve_op = &vnop_default_desc;
    /* XNU stores vn_default_error the same way (cast to VOPFUNC). */
    mt_probe_entries[0].opve_impl = (vnop_t)(void (*)(void))vn_default_error;
    mt_probe_entries[1].opve_op = &vnop_reclaim_desc;
    mt_probe_entries[1].opve_impl = mt_probe_reclaim;
    mt_probe_entries[2].opve_op = &vnop_inactive_desc;
    mt_probe_entries[2].opve_impl = mt_probe_inactive;
    mt_probe_vector = NULL;
    mt_probe_opv.opv_desc_vector_p = &mt_probe_vector;
    mt_probe_opv.opv_desc_ops = mt_probe_entries;
    mt_probe_opvs[0] = &mt_probe_opv;
    memset(&mt_probe_vfsops, 0, sizeof(mt_probe_vfsops));
    memset(&mt_probe_fsentry, 0, sizeof(mt_probe_fsentry));
    mt_probe_fsentry.vfe_vfsops = &mt_probe_vfsops;
    mt_probe_fsentry.vfe_vopcnt = 1;
    mt_probe_fsentry.vfe_opvdescs = mt_probe_opvs;
    strlcpy(mt_probe_fsentry.vfe_fsname, "mtprobe", sizeof(mt_probe_fsentry.vfe_fsname));
    mt_probe_fsentry.vfe_flags = VFS_TBLTHREADSAFE | VFS_TBLFSNODELOCK | VFS_TBLNOTYPENUM |
                                 VFS_TBL64BITREADY | VFS_TBLLOCALVOL;

    vfstable_t table = NULL;
    int err = vfs_fsadd(&mt_probe_fsentry, &table);
    if (err != 0) {
        return err;
    }
    if (mt_probe_vector == NULL) {
        vfs_fsremove(table);
        return ENOENT;
    }

    struct vnode_fsparam param;
    memset(&param, 0, sizeof(param));
    /* VNON, never VREG: vnode_create_internal reads vnfs_mp->mnt_ioflags for
     * a VREG without a NULL check (bsd/vfs/vfs_subr.c, xnu-3248 through
     * xnu-11417.121.6); for VNON every use of vnfs_mp is guarded, and
     * vnode_isinuse tests (usecount - kusecount) > refcnt as for VREG. */
    param.vnfs_mp = NULL;
    param.vnfs_vtype = VNON;
    param.vnfs_str = "mtprobe";
    param.vnfs_vops = mt_probe_vector;
    param.vnfs_flags = VNFS_NOCACHE | VNFS_CANTCACHE;
    vnode_t vp = NULL;
    err = vnode_create(VNCREATE_FLAVOR, (uint32_t)VCREATESIZE, &param, &vp);
    if (err != 0 || vp == NULL) {
        vfs_fsremove(table);
        return err != 0 ? err : ENOENT;
    }

    err = mt_find_v_op(vp);
    int counts_ok = err == 0 && mt_counts_check_probe(vp);

    /* Reclaim the probe vnode now (recycle + last iocount), so the vector
     * it points to can go with the filesystem. */
    vnode_recycle(vp);
    vnode_put(vp);
    int rm = vfs_fsremove(table);
    mt_probe_vector = NULL;
    if (err != 0) {
        return err;
    }
    if (rm != 0) {
        /* The probe filesystem is still registered: refuse to load rather
         * than leave it behind. */
        return rm;
    }

    if (counts_ok) {
        struct mt_sample s = {0, 0};
        vfs_iterate(0, mt_sample_mount, &s);
        counts_ok = s.failed == 0;
    }
    mt_g.probe_method = counts_ok ? MT_PROBE_OFFSET : MT_PROBE_ISINUSE;
    IOLog("maptrace: v_op at %u, counts by %s\n", (unsigned)mt_g.v_op_off,
          counts_ok ? "validated offsets" : "vnode_isinuse search");
    return 0;
}

#pragma mark - snapshot (hooks)

/**
 * (usecount - kusecount) by binary search over vnode_isinuse.
 * Context: any hook; takes the vnode's lock inside vnode_isinuse, never sleeps.
 */
static int32_t mt_isinuse_search(vnode_t vp)
{
    if (!vnode_isinuse(vp, 0)) {
        return 0;
    }
    /* Invariant: isinuse(lo) is true, isinuse(hi) is false. */
    int32_t lo = 0;
    int32_t hi = 1;
    while (vnode_isinuse(vp, hi)) {
        lo = hi;
        if (hi >= MT_ISINUSE_MAX) {
            return MT_ISINUSE_MAX + 1;
        }
        hi = hi * 2 > MT_ISINUSE_MAX ? MT_ISINUSE_MAX : hi * 2;
    }
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2;
        if (vnode_isinuse(vp, mid)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return hi;
}

/**
 * mt_counts_snapshot without validated offsets: the vnode_isinuse search,
 * or no counts at all.
 * @param vp the hook's vnode (the caller's VNOP holds an iocount).
 * @param ev the event being built.
 * Context: any hook; never sleeps or allocates.
 */
void mt_counts_snapshot_unvalidated(vnode_t vp, struct mt_event *ev)
{
    ev->count_method = mt_g.probe_method;
    if (mt_g.probe_method == MT_PROBE_ISINUSE) {
        ev->usecount = mt_isinuse_search(vp);
        ev->kusecount = -1;
        ev->iocount = -1;
    } else {
        ev->usecount = -1;
        ev->kusecount = -1;
        ev->iocount = -1;
    }
}
