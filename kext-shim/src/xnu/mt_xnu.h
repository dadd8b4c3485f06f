/*
 * mt_xnu.h - the XNU types and KPIs the maptrace shim uses, declared by the
 * project because no Kernel.framework headers exist on the build machines.
 *
 * Compiled three ways, always with the same declarations:
 *   - clang --target=x86_64-apple-macos11 -mkernel (the real kext),
 *   - clang --target=arm64e-apple-macos11 -mkernel (the real kext),
 *   - gcc on Linux with -DMT_SIM (the shim linked into sim/, which
 *     implements every function and data symbol declared here).
 * Only <stdint.h>, <stddef.h> and <stdarg.h>; no libc.
 *
 * Every struct the kernel and the kext share is pinned with _Static_assert
 * to the LP64 numbers of XNU xnu-7195 .. xnu-11417 (identical at both tags).
 * Every function and data symbol below is exported by a public KPI bundle
 * (com.apple.kpi.{bsd,libkern,mach,iokit,dsep,unsupported}); the bundle is
 * named next to each group. Symbols from kpi.unsupported are marked so.
 */
#ifndef MT_XNU_H
#define MT_XNU_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__LP64__) && !defined(_LP64)
#error "mt_xnu.h describes the LP64 kernel ABI only"
#endif

#define MT_XNU_ASSERT_SIZE(type, n) _Static_assert(sizeof(type) == (n), "mt_xnu: sizeof " #type)
#define MT_XNU_ASSERT_OFF(type, field, n) \
    _Static_assert(offsetof(type, field) == (n), "mt_xnu: offsetof " #type "." #field)

#if defined(__GNUC__)
#define MT_XNU_PRINTFLIKE(f, a) __attribute__((format(printf, f, a)))
#define MT_XNU_NORETURN __attribute__((noreturn))
#else
#define MT_XNU_PRINTFLIKE(f, a)
#define MT_XNU_NORETURN
#endif

/* ------------------------------------------------------- scalar types */

typedef int errno_t;
typedef int kern_return_t;
typedef int boolean_t;
typedef int pid_t;
typedef uint32_t uid_t;
typedef int32_t dev_t;
typedef int64_t off_t;
typedef uint64_t user_addr_t;
typedef uint64_t user_size_t;
typedef uintptr_t vm_size_t;
typedef uintptr_t vm_address_t;
typedef uint32_t upl_offset_t;
typedef uint32_t upl_size_t;
typedef char *caddr_t;
typedef int kauth_action_t;
typedef unsigned int mac_policy_handle_t;

#define KERN_SUCCESS 0
#define KERN_FAILURE 5

/* errno values the shim and the simulator exchange (bsd/sys/errno.h). */
#define EPERM 1
#define ENOENT 2
#define EIO 5
#define ENOMEM 12
#define EFAULT 14
#define EBUSY 16
#define EEXIST 17
#define EINVAL 22
#define ENOSPC 28
#define ENOTSUP 45
#define ETIMEDOUT 60

/* ------------------------------------------------------- opaque handles */

struct vnode;
struct mount;
struct vfs_context;
struct ucred;
struct proc;
struct thread;
struct upl;
struct label;
struct fileglob;
struct componentname;
struct vfstable;
struct vfsconf;
struct vfs_attr;
struct kauth_listener;
struct lck_grp;
struct lck_grp_attr;
struct lck_attr;
struct lck_mtx;
struct lck_spin;

typedef struct vnode *vnode_t;
typedef struct mount *mount_t;
typedef struct vfs_context *vfs_context_t;
typedef struct ucred *kauth_cred_t;
typedef struct proc *proc_t;
typedef struct thread *thread_t;
typedef struct upl *upl_t;
typedef struct vfstable *vfstable_t;
typedef struct kauth_listener *kauth_listener_t;
typedef struct lck_grp lck_grp_t;
typedef struct lck_grp_attr lck_grp_attr_t;
typedef struct lck_attr lck_attr_t;
typedef struct lck_mtx lck_mtx_t;
typedef struct lck_spin lck_spin_t;

/* ------------------------------------------------------- vnodes (kpi.bsd) */

enum vtype {
    VNON = 0,
    VREG = 1,
    VDIR = 2,
    VBLK = 3,
    VCHR = 4,
    VLNK = 5,
    VSOCK = 6,
    VFIFO = 7,
    VBAD = 8,
    VSTR = 9,
    VCPLX = 10
};

/* A vnode operation: every vector entry has this type (PFI in XNU). Note:
 * the SDK's vnop_t is the function type; here it is the pointer. */
typedef int (*vnop_t)(void *);
typedef int (**vnop_vector_t)(void *);

/* bsd/sys/vnode_internal.h (private header): only vdesc_offset, the first
 * field, is ever read by the shim; the full size is pinned for the simulator. */
struct vnodeop_desc {
    int vdesc_offset; /* index into every vnode-op vector, set at boot */
    const char *vdesc_name;
    int vdesc_flags;
    int *vdesc_vp_offsets;
    int vdesc_vpp_offset;
    int vdesc_cred_offset;
    int vdesc_proc_offset;
    int vdesc_componentname_offset;
    int vdesc_context_offset;
    caddr_t *vdesc_transports;
};
MT_XNU_ASSERT_SIZE(struct vnodeop_desc, 64);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_offset, 0);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_name, 8);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_flags, 16);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_vp_offsets, 24);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_vpp_offset, 32);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_cred_offset, 36);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_proc_offset, 40);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_componentname_offset, 44);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_context_offset, 48);
MT_XNU_ASSERT_OFF(struct vnodeop_desc, vdesc_transports, 56);

struct vnodeopv_entry_desc {
    struct vnodeop_desc *opve_op;
    int (*opve_impl)(void *);
};
MT_XNU_ASSERT_SIZE(struct vnodeopv_entry_desc, 16);
MT_XNU_ASSERT_OFF(struct vnodeopv_entry_desc, opve_op, 0);
MT_XNU_ASSERT_OFF(struct vnodeopv_entry_desc, opve_impl, 8);

struct vnodeopv_desc {
    int (***opv_desc_vector_p)(void *);
    const struct vnodeopv_entry_desc *opv_desc_ops; /* ends with a NULL opve_op */
};
MT_XNU_ASSERT_SIZE(struct vnodeopv_desc, 16);
MT_XNU_ASSERT_OFF(struct vnodeopv_desc, opv_desc_vector_p, 0);
MT_XNU_ASSERT_OFF(struct vnodeopv_desc, opv_desc_ops, 8);

/* bsd/sys/vnode_if.h argument blocks. */
struct vnop_mmap_args {
    struct vnodeop_desc *a_desc;
    vnode_t a_vp;
    int a_fflags; /* PROT_READ | PROT_WRITE | PROT_EXEC */
    vfs_context_t a_context;
};
MT_XNU_ASSERT_SIZE(struct vnop_mmap_args, 32);
MT_XNU_ASSERT_OFF(struct vnop_mmap_args, a_desc, 0);
MT_XNU_ASSERT_OFF(struct vnop_mmap_args, a_vp, 8);
MT_XNU_ASSERT_OFF(struct vnop_mmap_args, a_fflags, 16);
MT_XNU_ASSERT_OFF(struct vnop_mmap_args, a_context, 24);

struct vnop_mmap_check_args {
    struct vnodeop_desc *a_desc;
    vnode_t a_vp;
    int a_flags;
    vfs_context_t a_context;
};
MT_XNU_ASSERT_SIZE(struct vnop_mmap_check_args, 32);
MT_XNU_ASSERT_OFF(struct vnop_mmap_check_args, a_desc, 0);
MT_XNU_ASSERT_OFF(struct vnop_mmap_check_args, a_vp, 8);
MT_XNU_ASSERT_OFF(struct vnop_mmap_check_args, a_flags, 16);
MT_XNU_ASSERT_OFF(struct vnop_mmap_check_args, a_context, 24);

/* The same at xnu-7195.141.2 and xnu-11417.121.6. */
struct vnop_close_args {
    struct vnodeop_desc *a_desc;
    vnode_t a_vp;
    int a_fflag; /* the open's FREAD | FWRITE | O_EVTONLY | ... */
    vfs_context_t a_context;
};
MT_XNU_ASSERT_SIZE(struct vnop_close_args, 32);
MT_XNU_ASSERT_OFF(struct vnop_close_args, a_desc, 0);
MT_XNU_ASSERT_OFF(struct vnop_close_args, a_vp, 8);
MT_XNU_ASSERT_OFF(struct vnop_close_args, a_fflag, 16);
MT_XNU_ASSERT_OFF(struct vnop_close_args, a_context, 24);

struct vnop_mnomap_args {
    struct vnodeop_desc *a_desc;
    vnode_t a_vp;
    vfs_context_t a_context;
};
MT_XNU_ASSERT_SIZE(struct vnop_mnomap_args, 24);
MT_XNU_ASSERT_OFF(struct vnop_mnomap_args, a_desc, 0);
MT_XNU_ASSERT_OFF(struct vnop_mnomap_args, a_vp, 8);
MT_XNU_ASSERT_OFF(struct vnop_mnomap_args, a_context, 16);

struct vnop_pagein_args {
    struct vnodeop_desc *a_desc;
    vnode_t a_vp;
    upl_t a_pl; /* NULL for VFS_TBLVNOP_PAGEINV2 filesystems */
    upl_offset_t a_pl_offset;
    off_t a_f_offset;
    size_t a_size;
    int a_flags; /* UPL_* flags */
    vfs_context_t a_context;
};
MT_XNU_ASSERT_SIZE(struct vnop_pagein_args, 64);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_desc, 0);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_vp, 8);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_pl, 16);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_pl_offset, 24);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_f_offset, 32);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_size, 40);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_flags, 48);
MT_XNU_ASSERT_OFF(struct vnop_pagein_args, a_context, 56);

/* VNOP_RECLAIM: a filesystem's vector must implement it (a failing reclaim
 * panics the kernel); VNOP_INACTIVE runs when the last usecount goes. */
struct vnop_reclaim_args {
    struct vnodeop_desc *a_desc;
    vnode_t a_vp;
    vfs_context_t a_context;
};
MT_XNU_ASSERT_SIZE(struct vnop_reclaim_args, 24);

struct vnop_inactive_args {
    struct vnodeop_desc *a_desc;
    vnode_t a_vp;
    vfs_context_t a_context;
};
MT_XNU_ASSERT_SIZE(struct vnop_inactive_args, 24);

/* mmap protections, as VNOP_MMAP's a_fflags carries them. */
#define PROT_NONE 0x00
#define PROT_READ 0x01
#define PROT_WRITE 0x02
#define PROT_EXEC 0x04

/* UPL flags seen in VNOP_PAGEIN's a_flags (osfmk/mach/memory_object_types.h). */
#define UPL_IOSYNC 0x00000001
#define UPL_NOCOMMIT 0x00000002
#define UPL_NORDAHEAD 0x00000004

/* ubc_upl_abort_range flags (osfmk/mach/memory_object_types.h, xnu-11417.121.6). */
#define UPL_ABORT_RESTART 0x1
#define UPL_ABORT_ERROR 0x4
#define UPL_ABORT_FREE_ON_EMPTY 0x8

/* Exported descriptors (kpi.bsd); vdesc_offset is assigned by vfs_op_init. */
extern struct vnodeop_desc vnop_default_desc;
extern struct vnodeop_desc vnop_lookup_desc;
extern struct vnodeop_desc vnop_mmap_desc;
extern struct vnodeop_desc vnop_mnomap_desc;
extern struct vnodeop_desc vnop_close_desc;
extern struct vnodeop_desc vnop_pagein_desc;
extern struct vnodeop_desc vnop_mmap_check_desc;
extern struct vnodeop_desc vnop_reclaim_desc;
extern struct vnodeop_desc vnop_inactive_desc;

/* The default entry every vector needs (kpi.bsd): returns ENOTSUP. */
int vn_default_error(void);

/* vnode_iterate callout results and flags (bsd/sys/vnode.h). */
#define VNODE_RETURNED 0
#define VNODE_RETURNED_DONE 1
#define VNODE_CLAIMED 2
#define VNODE_CLAIMED_DONE 3
#define VNODE_RELOAD 0x01
#define VNODE_WAIT 0x02
#define VNODE_WRITEABLE 0x04
#define VNODE_WITHID 0x08
#define VNODE_NOLOCK_INTERNAL 0x10
#define VNODE_NODEAD 0x20
#define VNODE_NOSUSPEND 0x40
#define VNODE_ITERATE_ALL 0x80
#define VNODE_ITERATE_ACTIVE 0x100
#define VNODE_ITERATE_INACTIVE 0x200

/* vfs_iterate callout results and flags (bsd/sys/mount.h). */
#define VFS_RETURNED 0
#define VFS_RETURNED_DONE 1
#define VFS_CLAIMED 2
#define VFS_CLAIMED_DONE 3
#define VFS_ITERATE_TAIL_FIRST (1 << 0)
#define VFS_ITERATE_CB_DROPREF (1 << 1)
#define VFS_ITERATE_NOSKIP_UNMOUNT (1 << 2)

/* kpi.bsd */
int vnode_isinuse(vnode_t vp, int refcnt); /* (usecount - kusecount) > refcnt */
int vnode_getwithref(vnode_t vp);          /* +1 iocount; 0 or ENOENT (dead) */
int vnode_put(vnode_t vp);                 /* -1 iocount */
int vnode_ref(vnode_t vp);                 /* +1 usecount; needs an iocount */
void vnode_rele(vnode_t vp);               /* -1 usecount */
uint32_t vnode_vid(vnode_t vp);
enum vtype vnode_vtype(vnode_t vp);
mount_t vnode_mount(vnode_t vp);
int vnode_isrecycled(vnode_t vp);
int vnode_isreg(vnode_t vp);
int vnode_recycle(vnode_t vp);
void *vnode_fsnode(vnode_t vp);
const char *vnode_getname(vnode_t vp); /* release with vnode_putname */
void vnode_putname(const char *name);
int vn_getpath(struct vnode *vp, char *pathbuf, int *len); /* sleeps: not in pagein */
int vnode_iterate(mount_t mp, int flags, int (*callout)(struct vnode *, void *), void *arg);
int vfs_iterate(int flags, int (*callout)(struct mount *, void *), void *arg);
/* Aborts [offset, offset + size) of a UPL the caller must release
 * (bsd/sys/ubc.h, xnu-11417.121.6); never sleeps on the paging path. */
int ubc_upl_abort_range(upl_t upl, upl_offset_t offset, upl_size_t size, int flags);

/* ------------------------------------------------------- mounts (kpi.bsd) */

#define MFSNAMELEN 15     /* vfe_fsname, without the NUL */
#define MFSTYPENAMELEN 16 /* f_fstypename, with the NUL */
#define MAXPATHLEN 1024

typedef struct fsid {
    int32_t val[2];
} fsid_t;

/* bsd/sys/mount.h: declared under #pragma pack(4), so f_iosize sits at 4. */
#pragma pack(push, 4)
struct vfsstatfs {
    uint32_t f_bsize;
    size_t f_iosize;
    uint64_t f_blocks;
    uint64_t f_bfree;
    uint64_t f_bavail;
    uint64_t f_bused;
    uint64_t f_files;
    uint64_t f_ffree;
    fsid_t f_fsid;
    uid_t f_owner;
    uint64_t f_flags;
    char f_fstypename[MFSTYPENAMELEN];
    char f_mntonname[MAXPATHLEN];
    char f_mntfromname[MAXPATHLEN];
    uint32_t f_fssubtype;
    void *f_reserved[2];
};
#pragma pack(pop)
MT_XNU_ASSERT_SIZE(struct vfsstatfs, 2164);
MT_XNU_ASSERT_OFF(struct vfsstatfs, f_iosize, 4);
MT_XNU_ASSERT_OFF(struct vfsstatfs, f_fsid, 60);
MT_XNU_ASSERT_OFF(struct vfsstatfs, f_flags, 72);
MT_XNU_ASSERT_OFF(struct vfsstatfs, f_fstypename, 80);
MT_XNU_ASSERT_OFF(struct vfsstatfs, f_mntonname, 96);
MT_XNU_ASSERT_OFF(struct vfsstatfs, f_mntfromname, 1120);

/* bsd/sys/mount.h: the filesystem entry points; a kext that only needs a
 * vnode vector (layout discovery) leaves every slot NULL. */
struct vfsops {
    int (*vfs_mount)(struct mount *mp, vnode_t devvp, user_addr_t data, vfs_context_t context);
    int (*vfs_start)(struct mount *mp, int flags, vfs_context_t context);
    int (*vfs_unmount)(struct mount *mp, int mntflags, vfs_context_t context);
    int (*vfs_root)(struct mount *mp, struct vnode **vpp, vfs_context_t context);
    int (*vfs_quotactl)(struct mount *mp, int cmds, uid_t uid, caddr_t arg, vfs_context_t context);
    int (*vfs_getattr)(struct mount *mp, struct vfs_attr *attr, vfs_context_t context);
    int (*vfs_sync)(struct mount *mp, int waitfor, vfs_context_t context);
    int (*vfs_vget)(struct mount *mp, uint64_t ino, struct vnode **vpp, vfs_context_t context);
    int (*vfs_fhtovp)(struct mount *mp, int fhlen, unsigned char *fhp, struct vnode **vpp,
                      vfs_context_t context);
    int (*vfs_vptofh)(struct vnode *vp, int *fhlen, unsigned char *fhp, vfs_context_t context);
    int (*vfs_init)(struct vfsconf *conf);
    int (*vfs_sysctl)(int *name, unsigned int namelen, user_addr_t oldp, size_t *oldlenp,
                      user_addr_t newp, size_t newlen, vfs_context_t context);
    int (*vfs_setattr)(struct mount *mp, struct vfs_attr *attr, vfs_context_t context);
    int (*vfs_ioctl)(struct mount *mp, unsigned long command, caddr_t data, int flags,
                     vfs_context_t context);
    int (*vfs_vget_snapdir)(struct mount *mp, struct vnode **vpp, vfs_context_t context);
    void *vfs_reserved5;
    void *vfs_reserved4;
    void *vfs_reserved3;
    void *vfs_reserved2;
    void *vfs_reserved1;
};
MT_XNU_ASSERT_SIZE(struct vfsops, 160);

struct vfs_fsentry {
    struct vfsops *vfe_vfsops;
    int vfe_vopcnt; /* number of vnodeopv_desc in vfe_opvdescs */
    struct vnodeopv_desc **vfe_opvdescs;
    int vfe_fstypenum;
    char vfe_fsname[MFSNAMELEN];
    uint32_t vfe_flags;
    void *vfe_reserv[2];
};
MT_XNU_ASSERT_SIZE(struct vfs_fsentry, 64);
MT_XNU_ASSERT_OFF(struct vfs_fsentry, vfe_opvdescs, 16);
MT_XNU_ASSERT_OFF(struct vfs_fsentry, vfe_fsname, 28);
MT_XNU_ASSERT_OFF(struct vfs_fsentry, vfe_flags, 44);

#define VFS_TBLTHREADSAFE 0x0001
#define VFS_TBLFSNODELOCK 0x0002
#define VFS_TBLNOTYPENUM 0x0008
#define VFS_TBLLOCALVOL 0x0010
#define VFS_TBL64BITREADY 0x0020
#define VFS_TBLVNOP_PAGEINV2 0x2000

struct vnode_fsparam {
    struct mount *vnfs_mp;
    enum vtype vnfs_vtype;
    const char *vnfs_str;
    struct vnode *vnfs_dvp;
    void *vnfs_fsnode;
    int (**vnfs_vops)(void *);
    int vnfs_markroot;
    int vnfs_marksystem;
    dev_t vnfs_rdev;
    off_t vnfs_filesize;
    struct componentname *vnfs_cnp;
    uint32_t vnfs_flags;
};
MT_XNU_ASSERT_SIZE(struct vnode_fsparam, 88);
MT_XNU_ASSERT_OFF(struct vnode_fsparam, vnfs_vops, 40);
MT_XNU_ASSERT_OFF(struct vnode_fsparam, vnfs_filesize, 64);

#define VNCREATE_FLAVOR 0
#define VCREATESIZE sizeof(struct vnode_fsparam)
#define VNFS_NOCACHE 0x01
#define VNFS_CANTCACHE 0x02
#define VNFS_ADDFSREF 0x04

/* kpi.bsd */
struct vfsstatfs *vfs_statfs(mount_t mp);
void vfs_name(mount_t mp, char *buffer); /* buffer of MFSNAMELEN + 1 */
errno_t vfs_fsadd(struct vfs_fsentry *vfe, vfstable_t *handle);
errno_t vfs_fsremove(vfstable_t handle); /* EBUSY while mounted */
errno_t vnode_create(uint32_t flavor, uint32_t size, void *data, vnode_t *vpp);

/* ------------------------------------------------------- processes (kpi.bsd) */

int proc_suser(proc_t p); /* 0 for root, EPERM otherwise */
kauth_cred_t kauth_cred_get(void);
uid_t kauth_cred_getuid(kauth_cred_t cred);
proc_t current_proc(void);
int proc_selfpid(void);
void proc_selfname(char *buf, int size);
int proc_pid(proc_t p);
void proc_name(int pid, char *buf, int size);
proc_t vfs_context_proc(vfs_context_t ctx);
kauth_cred_t vfs_context_ucred(vfs_context_t ctx);
vfs_context_t vfs_context_create(vfs_context_t ctx);
int vfs_context_rele(vfs_context_t ctx);
/* kpi.unsupported (and kpi.private): avoid where vfs_context_create works. */
vfs_context_t vfs_context_current(void);

/* ------------------------------------------------------- kauth (kpi.bsd) */

/* kauth_listen_scope/kauth_unlisten_scope are __kpi_deprecated and not
 * loadable from macOS 11 on: a kext that links them does not load there.
 * Only the kauth build variant (MT_WITH_KAUTH, macOS 10.15) calls them. */
typedef int (*kauth_scope_callback_t)(kauth_cred_t cred, void *idata, kauth_action_t action,
                                      uintptr_t arg0, uintptr_t arg1, uintptr_t arg2,
                                      uintptr_t arg3);
#define KAUTH_SCOPE_VNODE "com.apple.kauth.vnode"
#define KAUTH_SCOPE_FILEOP "com.apple.kauth.fileop"
#define KAUTH_RESULT_ALLOW 1
#define KAUTH_RESULT_DENY 2
#define KAUTH_RESULT_DEFER 3
#define KAUTH_VNODE_READ_DATA (1 << 1)
#define KAUTH_VNODE_WRITE_DATA (1 << 2)
#define KAUTH_VNODE_EXECUTE (1 << 3)
#define KAUTH_VNODE_ACCESS (1u << 31)
#define KAUTH_FILEOP_OPEN 1
#define KAUTH_FILEOP_CLOSE 2
#define KAUTH_FILEOP_EXEC 6

kauth_listener_t kauth_listen_scope(const char *identifier, kauth_scope_callback_t callback,
                                    void *idata);
void kauth_unlisten_scope(kauth_listener_t listener);

/* ------------------------------------------------------- MAC (kpi.dsep) */

struct mac_policy_conf;

typedef int mpo_file_check_mmap_t(kauth_cred_t cred, struct fileglob *fg, struct label *label,
                                  int prot, int flags, uint64_t file_pos, int *maxprot);
typedef void mpo_policy_destroy_t(struct mac_policy_conf *mpc);
typedef void mpo_policy_init_t(struct mac_policy_conf *mpc);
typedef void mpo_policy_initbsd_t(struct mac_policy_conf *mpc);
typedef void mpo_proc_notify_exec_complete_t(struct proc *p);
typedef int mpo_vnode_check_exec_t(kauth_cred_t cred, struct vnode *vp, struct vnode *scriptvp,
                                   struct label *vnodelabel, struct label *scriptlabel,
                                   struct label *execlabel, struct componentname *cnp,
                                   unsigned int *csflags, void *macpolicyattr,
                                   size_t macpolicyattrlen);
typedef int mpo_vnode_check_open_t(kauth_cred_t cred, struct vnode *vp, struct label *label,
                                   int acc_mode);
typedef void mpo_vnode_notify_open_t(kauth_cred_t cred, struct vnode *vp, struct label *label,
                                     int acc_flags);

/* One slot of struct mac_policy_ops. Cast a hook to it on store; the kernel
 * calls it back through the slot's real type. */
typedef void (*mac_policy_op_t)(void);

/* struct mac_policy_ops: 335 pointer slots from xnu-3248 to xnu-11417
 * (Apple reuses reserved slots; the indices below are stable). */
#define MAC_POLICY_OPS_SLOTS 335
#define MPO_FILE_CHECK_MMAP 36
#define MPO_MOUNT_CHECK_UMOUNT 91
#define MPO_POLICY_DESTROY 114
#define MPO_POLICY_INIT 115
#define MPO_POLICY_INITBSD 116
#define MPO_PROC_NOTIFY_EXEC_COMPLETE 122
#define MPO_VNODE_CHECK_EXEC 258
#define MPO_VNODE_CHECK_OPEN 267
#define MPO_VNODE_NOTIFY_OPEN 324

struct mac_policy_ops {
    mac_policy_op_t mpo_slots[MAC_POLICY_OPS_SLOTS];
};
MT_XNU_ASSERT_SIZE(struct mac_policy_ops, 2680);

typedef struct mac_policy_conf *mpc_t;

struct mac_policy_conf {
    const char *mpc_name;     /* unique; a duplicate is refused with EEXIST */
    const char *mpc_fullname;
    char const *const *mpc_labelnames;
    unsigned int mpc_labelname_count;
    const struct mac_policy_ops *mpc_ops;
    int mpc_loadtime_flags;
    int *mpc_field_off; /* NULL: no label slot */
    int mpc_runtime_flags;
    mpc_t mpc_list;
    void *mpc_data;
};
MT_XNU_ASSERT_SIZE(struct mac_policy_conf, 80);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_name, 0);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_fullname, 8);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_labelnames, 16);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_labelname_count, 24);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_ops, 32);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_loadtime_flags, 40);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_field_off, 48);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_runtime_flags, 56);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_list, 64);
MT_XNU_ASSERT_OFF(struct mac_policy_conf, mpc_data, 72);

#define MPC_LOADTIME_FLAG_NOTLATE 0x00000001
#define MPC_LOADTIME_FLAG_UNLOADOK 0x00000002 /* without it unregister is EBUSY */
#define MPC_LOADTIME_FLAG_LABELMANDATORY 0x00000004
#define MPC_LOADTIME_BASE_POLICY 0x00000008

int mac_policy_register(struct mac_policy_conf *mpc, mac_policy_handle_t *handlep, void *xd);
int mac_policy_unregister(mac_policy_handle_t handle);

/* ------------------------------------------------------- sysctl (kpi.bsd) */

struct sysctl_req;
struct sysctl_oid;

#define SYSCTL_HANDLER_ARGS \
    (struct sysctl_oid * oidp, void *arg1, int arg2, struct sysctl_req *req)
typedef int (*sysctl_handler_t)(struct sysctl_oid *oidp, void *arg1, int arg2,
                                struct sysctl_req *req);

struct sysctl_oid_list {
    struct sysctl_oid *slh_first;
};
MT_XNU_ASSERT_SIZE(struct sysctl_oid_list, 8);

struct sysctl_oid {
    struct sysctl_oid_list *oid_parent; /* arm64e: DA-signed, docs/xnu.md §6 */
    struct {
        struct sysctl_oid *sle_next;
    } oid_link;
    int oid_number;
    int oid_kind; /* CTLTYPE_* | CTLFLAG_* */
    void *oid_arg1;
    int oid_arg2;
    const char *oid_name;
    int (*oid_handler)(struct sysctl_oid *oidp, void *arg1, int arg2, struct sysctl_req *req);
    const char *oid_fmt;
    const char *oid_descr;
    int oid_version; /* must be SYSCTL_OID_VERSION or the OID is ignored */
    int oid_refcnt;
};
MT_XNU_ASSERT_SIZE(struct sysctl_oid, 80);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_parent, 0);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_link, 8);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_number, 16);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_kind, 20);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_arg1, 24);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_arg2, 32);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_name, 40);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_handler, 48);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_fmt, 56);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_descr, 64);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_version, 72);
MT_XNU_ASSERT_OFF(struct sysctl_oid, oid_refcnt, 76);

struct sysctl_req {
    struct proc *p; /* requesting process: check with proc_suser */
    int lock;
    user_addr_t oldptr; /* 0: size query, SYSCTL_OUT only counts */
    size_t oldlen;
    size_t oldidx;
    int (*oldfunc)(struct sysctl_req *req, const void *src, size_t len);
    user_addr_t newptr; /* 0: nothing to write */
    size_t newlen;
    size_t newidx;
    int (*newfunc)(struct sysctl_req *req, void *dst, size_t len);
};
MT_XNU_ASSERT_SIZE(struct sysctl_req, 80);
MT_XNU_ASSERT_OFF(struct sysctl_req, p, 0);
MT_XNU_ASSERT_OFF(struct sysctl_req, lock, 8);
MT_XNU_ASSERT_OFF(struct sysctl_req, oldptr, 16);
MT_XNU_ASSERT_OFF(struct sysctl_req, oldlen, 24);
MT_XNU_ASSERT_OFF(struct sysctl_req, oldidx, 32);
MT_XNU_ASSERT_OFF(struct sysctl_req, oldfunc, 40);
MT_XNU_ASSERT_OFF(struct sysctl_req, newptr, 48);
MT_XNU_ASSERT_OFF(struct sysctl_req, newlen, 56);
MT_XNU_ASSERT_OFF(struct sysctl_req, newidx, 64);
MT_XNU_ASSERT_OFF(struct sysctl_req, newfunc, 72);

/* copyout through the request: may fault (EFAULT), may sleep. */
#define SYSCTL_OUT(r, p, l) ((r)->oldfunc)(r, p, l)
#define SYSCTL_IN(r, p, l) ((r)->newfunc)(r, p, l)

#define CTLTYPE 0xf
#define CTLTYPE_NODE 1
#define CTLTYPE_INT 2
#define CTLTYPE_STRING 3
#define CTLTYPE_QUAD 4
#define CTLTYPE_OPAQUE 5
#define CTLTYPE_STRUCT CTLTYPE_OPAQUE
#define CTLFLAG_RD 0x80000000u
#define CTLFLAG_WR 0x40000000u
#define CTLFLAG_RW (CTLFLAG_RD | CTLFLAG_WR)
#define CTLFLAG_NOLOCK 0x20000000u
#define CTLFLAG_ANYBODY 0x10000000u /* writes only: reads are open to all */
#define CTLFLAG_SECURE 0x08000000u
#define CTLFLAG_MASKED 0x04000000u
#define CTLFLAG_NOAUTO 0x02000000u
#define CTLFLAG_KERN 0x01000000u
#define CTLFLAG_LOCKED 0x00800000u /* without it the handler runs under a global mutex */
#define CTLFLAG_OID2 0x00400000u   /* required on arm64 */
#define CTLFLAG_PERMANENT 0x00200000u /* kernel only: panics for a kext */
#define OID_AUTO (-1)
#define OID_AUTO_START 100
#define SYSCTL_OID_VERSION 1

/* The kern node's children (kpi.bsd; extern data). */
extern struct sysctl_oid_list sysctl__kern_children;

void sysctl_register_oid(struct sysctl_oid *oidp);
void sysctl_unregister_oid(struct sysctl_oid *oidp);
int sysctl_handle_opaque(struct sysctl_oid *oidp, void *arg1, int arg2, struct sysctl_req *req);

/* ------------------------------------------------------- memory and logging (kpi.iokit) */

void *IOMalloc(vm_size_t size);
void *IOMallocZero(vm_size_t size);
void IOFree(void *address, vm_size_t size); /* size must match the allocation */
void IOLog(const char *format, ...) MT_XNU_PRINTFLIKE(1, 2);
void IOSleep(unsigned int milliseconds); /* blocks: thread context only */

/* ------------------------------------------------------- locks (kpi.libkern) */

lck_grp_attr_t *lck_grp_attr_alloc_init(void);
void lck_grp_attr_free(lck_grp_attr_t *attr);
lck_grp_t *lck_grp_alloc_init(const char *grp_name, lck_grp_attr_t *attr);
void lck_grp_free(lck_grp_t *grp);
lck_mtx_t *lck_mtx_alloc_init(lck_grp_t *grp, lck_attr_t *attr);
void lck_mtx_lock(lck_mtx_t *lck); /* may block */
void lck_mtx_unlock(lck_mtx_t *lck);
void lck_mtx_free(lck_mtx_t *lck, lck_grp_t *grp);
lck_spin_t *lck_spin_alloc_init(lck_grp_t *grp, lck_attr_t *attr);
void lck_spin_lock(lck_spin_t *lck); /* no copyout, no sleep while held */
void lck_spin_unlock(lck_spin_t *lck);
void lck_spin_free(lck_spin_t *lck, lck_grp_t *grp);

/* ------------------------------------------------------- libkern (kpi.libkern) */

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
size_t strlcpy(char *dst, const char *src, size_t size);
int snprintf(char *buf, size_t size, const char *fmt, ...) MT_XNU_PRINTFLIKE(3, 4);
void panic(const char *fmt, ...) MT_XNU_PRINTFLIKE(1, 2) MT_XNU_NORETURN;

/* ------------------------------------------------------- time, CPUs, threads (kpi.mach) */

uint64_t mach_absolute_time(void);
void absolutetime_to_nanoseconds(uint64_t abstime, uint64_t *result);
thread_t current_thread(void);
uint64_t thread_tid(thread_t thread);
void read_random(void *buffer, unsigned int numbytes);
/* x86_64: kpi.unsupported; arm64: kpi.private (not linkable): shard by a
 * thread-id hash there. */
int cpu_number(void);

/* ------------------------------------------------------- kmod (kpi.libkern) */

#define KMOD_MAX_NAME 64
#define KMOD_INFO_VERSION 1
#define KMOD_INFO_NAME kmod_info

struct kmod_info;
typedef kern_return_t kmod_start_func_t(struct kmod_info *ki, void *data);
typedef kern_return_t kmod_stop_func_t(struct kmod_info *ki, void *data);

#pragma pack(push, 4)
typedef struct kmod_reference {
    struct kmod_reference *next;
    struct kmod_info *info;
} kmod_reference_t;

typedef struct kmod_info {
    struct kmod_info *next;
    int32_t info_version;
    uint32_t id;
    char name[KMOD_MAX_NAME];
    char version[KMOD_MAX_NAME];
    int32_t reference_count;
    kmod_reference_t *reference_list;
    vm_address_t address;
    vm_size_t size;
    vm_size_t hdr_size;
    kmod_start_func_t *start;
    kmod_stop_func_t *stop; /* non-KERN_SUCCESS refuses the unload */
} kmod_info_t;
#pragma pack(pop)
MT_XNU_ASSERT_SIZE(kmod_reference_t, 16);
MT_XNU_ASSERT_SIZE(kmod_info_t, 196);
MT_XNU_ASSERT_OFF(kmod_info_t, next, 0);
MT_XNU_ASSERT_OFF(kmod_info_t, info_version, 8);
MT_XNU_ASSERT_OFF(kmod_info_t, id, 12);
MT_XNU_ASSERT_OFF(kmod_info_t, name, 16);
MT_XNU_ASSERT_OFF(kmod_info_t, version, 80);
MT_XNU_ASSERT_OFF(kmod_info_t, reference_count, 144);
MT_XNU_ASSERT_OFF(kmod_info_t, reference_list, 148);
MT_XNU_ASSERT_OFF(kmod_info_t, address, 156);
MT_XNU_ASSERT_OFF(kmod_info_t, size, 164);
MT_XNU_ASSERT_OFF(kmod_info_t, hdr_size, 172);
MT_XNU_ASSERT_OFF(kmod_info_t, start, 180);
MT_XNU_ASSERT_OFF(kmod_info_t, stop, 188);

#define MT_XNU_STR_(x) #x
#define MT_XNU_STR(x) MT_XNU_STR_(x)

/* osfmk/mach/kmod.h KMOD_EXPLICIT_DECL: defines the global kmod_info the
 * loader reads (XNU declares start/stop __private_extern__; a plain
 * declaration works before or after their definition). arm64e: start/stop
 * here come from a static initializer, which clang-22 signs and clang-19
 * does not (the object check refuses unsigned ones). */
#define KMOD_EXPLICIT_DECL(name, version, start, stop)                                        \
    kmod_start_func_t start;                                                                 \
    kmod_stop_func_t stop;                                                                   \
    kmod_info_t KMOD_INFO_NAME = {0, KMOD_INFO_VERSION, -1U, MT_XNU_STR(name), version, -1, \
                                  0, 0, 0, 0, start, stop};

#endif /* MT_XNU_H */
