/*
 * mt_mac.c - the MAC policy: mmap(2) intent (mpo_file_check_mmap),
 * vnode discovery (mpo_vnode_check_open, mpo_vnode_notify_open,
 * mpo_vnode_check_exec), OPEN records (mpo_vnode_notify_open), a process
 * to be named again after exec (mpo_proc_notify_exec_complete) and the
 * last mount of a filesystem type going away (mpo_mount_check_umount).
 *
 * Role: the policy never denies and never changes maxprot; every hook
 * returns 0 (fail open). By default it registers with
 * MPC_LOADTIME_FLAG_UNLOADOK so stop can unregister it. That has a cost
 * while loaded: a non-static policy makes every MAC check in the system
 * take mac_policy_mtx twice (MAC_POLICY_ITERATE in security/mac_internal.h,
 * mac_policy_list_conditional_busy in security/mac_base.c,
 * xnu-11417.121.6). The resident build (-DMT_RESIDENT) registers without
 * UNLOADOK: static when it lands next to the static policies, and never
 * unloadable (mac_policy_unregister returns EBUSY). The ops table and the
 * conf are writable and filled in code at start (arm64e signs function
 * pointers taken in code).
 *
 * Calls: mt_core_wants, mt_core_record, mt_core_proc_forget, mt_proc_note
 * (and mt_vnode_seen).
 */
#include "mt_shim.h"

static struct mac_policy_ops mt_mac_ops;
static struct mac_policy_conf mt_mac_conf;

#pragma mark - hooks

/**
 * mpo_file_check_mmap: records FILE_MMAP (prot, maxprot, flags, file_pos).
 * The fileglob names no vnode here; the VNOP_MMAP that follows on the same
 * thread does.
 * @param maxprot read only: a policy must never add bits.
 * @return 0, always (never denies).
 * Context: thread context of mmap(2); never blocks or allocates.
 */
static int mt_mac_file_check_mmap(kauth_cred_t cred, struct fileglob *fg, struct label *label,
                                  int prot, int flags, uint64_t file_pos, int *maxprot)
{
    (void)cred;
    (void)fg;
    (void)label;
    uint32_t slot = mt_enter();
    const struct mt_core *core = mt_core_ref();
    uint32_t pid = (uint32_t)proc_selfpid();
    if (mt_core_wants(core, MT_KIND_FILE_MMAP, pid)) {
        struct mt_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.kind = MT_KIND_FILE_MMAP;
        ev.pid = pid;
        ev.tid = thread_tid(current_thread());
        ev.timestamp_ns = mt_now_ns();
        ev.offset = (int64_t)file_pos;
        ev.prot = (uint32_t)prot;
        ev.maxprot = maxprot != NULL ? (uint32_t)*maxprot : 0;
        ev.flags = (uint32_t)flags;
        ev.usecount = -1;
        ev.kusecount = -1;
        ev.iocount = -1;
        ev.count_method = MT_PROBE_NONE;
        uint32_t hint = mt_shard_hint(ev.tid);
        mt_proc_note(core, hint, &ev);
        mt_core_record(core, hint, &ev);
    }
    mt_leave(slot);
    return 0;
}

/**
 * mpo_vnode_check_open: discovery only.
 * @return 0, always.
 * Context: thread context of open(2); may block on the patch lock the
 *          first time a vector is seen.
 */
static int mt_mac_vnode_check_open(kauth_cred_t cred, struct vnode *vp, struct label *label,
                                   int acc_mode)
{
    (void)cred;
    (void)label;
    (void)acc_mode;
    uint32_t slot = mt_enter();
    mt_vnode_seen(vp);
    mt_leave(slot);
    return 0;
}

/**
 * Records OPEN for vp: counts after vn_open_auth_finish's vnode_ref_ext,
 * so they include this open's usecount (bsd/vfs/vfs_vnops.c,
 * xnu-11417.121.6). Regular files only, like discovery.
 * Context: thread context of open(2); never blocks or allocates.
 */
static void mt_mac_record_open(struct vnode *vp, int acc_flags)
{
    const struct mt_core *core = mt_core_ref();
    uint32_t pid = (uint32_t)proc_selfpid();
    if (vp == NULL || vnode_vtype(vp) != VREG || !mt_core_wants(core, MT_KIND_OPEN, pid)) {
        return;
    }
    struct mt_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = MT_KIND_OPEN;
    ev.pid = pid;
    ev.tid = thread_tid(current_thread());
    ev.timestamp_ns = mt_now_ns();
    ev.vnode_ptr = (uint64_t)(uintptr_t)vp;
    ev.vid = vnode_vid(vp);
    ev.flags = (uint32_t)acc_flags;
    mt_counts_snapshot(vp, &ev);
    uint32_t hint = mt_shard_hint(ev.tid);
    mt_proc_note(core, hint, &ev);
    mt_core_record(core, hint, &ev);
}

/**
 * mpo_vnode_notify_open: discovery, and the OPEN record that attributes
 * the open's usecount to its process. vn_open_auth_finish calls it for
 * every successful open, also of a file open(O_CREAT) has just created,
 * which skips mpo_vnode_check_open (vn_open_auth, bsd/vfs/vfs_vnops.c,
 * xnu-11417.121.6).
 * Context: thread context of open(2); may block on the patch lock the
 *          first time a vector is seen.
 */
static void mt_mac_vnode_notify_open(kauth_cred_t cred, struct vnode *vp, struct label *label,
                                     int acc_flags)
{
    (void)cred;
    (void)label;
    uint32_t slot = mt_enter();
    mt_vnode_seen(vp);
    mt_mac_record_open(vp, acc_flags);
    mt_leave(slot);
}

/**
 * mpo_vnode_check_exec: discovery only (exec maps segments through
 * VNOP_MMAP without a MAC mmap check, so the vector must be hooked first).
 * @return 0, always.
 * Context: thread context of exec; may block on the patch lock.
 */
static int mt_mac_vnode_check_exec(kauth_cred_t cred, struct vnode *vp, struct vnode *scriptvp,
                                   struct label *vnodelabel, struct label *scriptlabel,
                                   struct label *execlabel, struct componentname *cnp,
                                   unsigned int *csflags, void *macpolicyattr,
                                   size_t macpolicyattrlen)
{
    (void)cred;
    (void)vnodelabel;
    (void)scriptlabel;
    (void)execlabel;
    (void)cnp;
    (void)csflags;
    (void)macpolicyattr;
    (void)macpolicyattrlen;
    uint32_t slot = mt_enter();
    mt_vnode_seen(vp);
    mt_vnode_seen(scriptvp);
    mt_leave(slot);
    return 0;
}

/**
 * mpo_proc_notify_exec_complete: p exec'd (or was spawned) and is about to
 * return to user space, now under its new name; its next event names it
 * again. task_wait_to_return calls it with p == current_proc()
 * (osfmk/kern/task.c, xnu-7195.141.2 and xnu-11417.121.6).
 * Context: thread context of the new image's first thread; never blocks.
 */
static void mt_mac_proc_notify_exec_complete(struct proc *p)
{
    uint32_t slot = mt_enter();
    const struct mt_core *core = mt_core_ref();
    if (core != NULL && p != NULL) {
        mt_core_proc_forget(core, (uint32_t)proc_pid(p));
    }
    mt_leave(slot);
}

/**
 * Whether cred may unmount mp: root, or the user that mounted it. The rule
 * safedounmount applies AFTER the MAC check (bsd/vfs/vfs_syscalls.c
 * unmount and safedounmount, xnu-11417.121.6 and xnu-7195.141.2), so any
 * user's unmount(2) reaches our hook first. safedounmount also lets two
 * others through that no public KPI can tell: a task with the private
 * role-account-unmount entitlement (from xnu-8792 unmount(2) hands us the
 * kernel's credential for it, so it is root here; before, and through
 * VFS_CTL_UMOUNT on every release, it is its own user), and another user
 * of a KERNEL_MOUNT_PERMIT_UNMOUNT mount without MNT_FORCE (the flag has
 * no accessor). Those unmounts keep the hooks, as a MAC-less unmount
 * does: the vector stays in the table, and unload is refused until a
 * mount of that type is seen again (RELIABILITY.md).
 * Context: thread context; never blocks.
 */
static int mt_may_unmount(kauth_cred_t cred, mount_t mp)
{
    if (cred == NULL || mp == NULL) {
        return 0;
    }
    uid_t uid = kauth_cred_getuid(cred);
    return uid == 0 || vfs_statfs(mp)->f_owner == uid;
}

/**
 * mpo_mount_check_umount: a mount is about to go; when it is the last of
 * its filesystem type, its hooked vector is restored and forgotten while
 * the filesystem is certainly still registered (mt_vnops_mount_going).
 * XNU calls it from unmount(2) with an iocount on the mount's root vnode
 * (bsd/vfs/vfs_syscalls.c, xnu-11417.121.6), before dounmount. Only for a
 * caller that may unmount: anyone else's attempt fails with EPERM after
 * this check, and unhooking for it would let any user keep a volume
 * untraced (and cost a vnode walk of it) at will.
 * @return 0, always (never denies).
 * Context: thread context of unmount(2); may block on the patch lock.
 */
static int mt_mac_mount_check_umount(kauth_cred_t cred, struct mount *mp, struct label *label)
{
    (void)label;
    uint32_t slot = mt_enter();
    if (mt_may_unmount(cred, mp)) {
        mt_vnops_mount_going(mp);
    }
    mt_leave(slot);
    return 0;
}

#pragma mark - registration

/**
 * Fills the ops and conf and registers the policy.
 * @return 0 or mac_policy_register's error.
 * Context: thread context (start); may block.
 */
int mt_mac_start(void)
{
    memset(&mt_mac_ops, 0, sizeof(mt_mac_ops));
    mt_mac_ops.mpo_slots[MPO_FILE_CHECK_MMAP] = (mac_policy_op_t)mt_mac_file_check_mmap;
    mt_mac_ops.mpo_slots[MPO_VNODE_CHECK_OPEN] = (mac_policy_op_t)mt_mac_vnode_check_open;
    mt_mac_ops.mpo_slots[MPO_VNODE_NOTIFY_OPEN] = (mac_policy_op_t)mt_mac_vnode_notify_open;
    mt_mac_ops.mpo_slots[MPO_VNODE_CHECK_EXEC] = (mac_policy_op_t)mt_mac_vnode_check_exec;
    mt_mac_ops.mpo_slots[MPO_MOUNT_CHECK_UMOUNT] = (mac_policy_op_t)mt_mac_mount_check_umount;
    mt_mac_ops.mpo_slots[MPO_PROC_NOTIFY_EXEC_COMPLETE] =
        (mac_policy_op_t)mt_mac_proc_notify_exec_complete;

    memset(&mt_mac_conf, 0, sizeof(mt_mac_conf));
    mt_mac_conf.mpc_name = MT_KEXT_NAME;
    mt_mac_conf.mpc_fullname = "maptrace mmap/pagein tracer";
    mt_mac_conf.mpc_labelnames = NULL;
    mt_mac_conf.mpc_labelname_count = 0;
    mt_mac_conf.mpc_ops = &mt_mac_ops;
    mt_mac_conf.mpc_loadtime_flags = MT_MAC_LOADTIME_FLAGS;
    mt_mac_conf.mpc_field_off = NULL;
    mt_mac_conf.mpc_runtime_flags = 0;

    int err = mac_policy_register(&mt_mac_conf, &mt_g.mac_handle, mt_g.kmod_data);
    if (err == 0) {
        mt_g.mac_registered = 1;
    }
    return err;
}

/**
 * Unregisters the policy if registered.
 * @return 0, or mac_policy_unregister's error (the policy stays).
 * Context: thread context (stop); may block.
 */
int mt_mac_stop(void)
{
    if (!mt_g.mac_registered) {
        return 0;
    }
    int err = mac_policy_unregister(mt_g.mac_handle);
    if (err == 0) {
        mt_g.mac_registered = 0;
    }
    return err;
}
