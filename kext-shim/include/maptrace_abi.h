/*
 * maptrace_abi.h - every byte that crosses between the maptrace kext and userspace.
 *
 * This header is the single source of truth for the kernel <-> userspace ABI:
 * the sysctl names, the batch/segment/record layouts read from
 * kern.maptrace.events, the config struct written to kern.maptrace.config and
 * the stats struct read from kern.maptrace.stats.
 *
 * Rules (checked by tests and by the _Static_asserts at the end):
 *   - only <stdint.h> and <stddef.h>; no pointers, no bool, no bitfields,
 *     no unions, no implicit padding (every gap is a named reserved field);
 *   - every integer is little-endian (both supported architectures are);
 *   - changing any layout or meaning bumps MT_ABI_VERSION_MAJOR in the same
 *     commit; adding a kind or a flag bit bumps MT_ABI_VERSION_MINOR.
 *
 * Rust reads this file through bindgen (crate maptrace-abi); it never keeps a
 * hand-written mirror.
 */
#ifndef MAPTRACE_ABI_H
#define MAPTRACE_ABI_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- versions */

#define MT_ABI_VERSION_MAJOR 1
#define MT_ABI_VERSION_MINOR 2
/* Combined version as carried in headers: major in the high byte. */
#define MT_ABI_VERSION ((MT_ABI_VERSION_MAJOR << 8) | MT_ABI_VERSION_MINOR)

/* ------------------------------------------------------------------ names */

#define MT_BUNDLE_ID "org.maptrace.kext"
#define MT_KEXT_NAME "maptrace"
/* The sysctl node, a child of "kern". */
#define MT_SYSCTL_NODE "maptrace"
#define MT_SYSCTL_ABI "kern.maptrace.abi"       /* read: uint32_t MT_ABI_VERSION */
#define MT_SYSCTL_STATS "kern.maptrace.stats"   /* read: mt_stats_header + shards */
#define MT_SYSCTL_CONFIG "kern.maptrace.config" /* read/write (root): mt_config */
#define MT_SYSCTL_EVENTS "kern.maptrace.events" /* read (root): one batch, destructive */

/* ------------------------------------------------------------------ slots */

/* Every record occupies one or more contiguous 64-byte slots of a shard. */
#define MT_SLOT_SIZE 64
/* Stamps of record heads are (position + 1) masked to 31 bits ... */
#define MT_STAMP_MASK 0x7fffffffu
/* ... and continuation slots of multi-slot records set bit 31, so no
 * continuation slot can ever be mistaken for a committed head. */
#define MT_STAMP_CONT 0x80000000u
/* Largest record, in slots: a path record of MT_PATH_MAX bytes. */
#define MT_RECORD_MAX_SLOTS 18
/* Shards (one per CPU) a kext may have: segment shard numbers are below it. */
#define MT_MAX_SHARDS 256
/* Longest path carried (bytes, without NUL); longer paths are cut and flagged. */
#define MT_PATH_MAX 1024

/* ------------------------------------------------------------ event kinds */

/* Record kinds. Numbered explicitly and never reused; MT_KIND__COUNT bounds
 * tables indexed by kind. */
enum mt_kind {
    MT_KIND_NONE = 0,      /* never written; a zeroed slot */
    MT_KIND_MMAP = 1,      /* VNOP_MMAP: every map of a file (mmap(2), exec, loader) */
    MT_KIND_PAGEIN = 2,    /* VNOP_PAGEIN: a cluster read caused by a fault */
    MT_KIND_MNOMAP = 3,    /* VNOP_MNOMAP: the last mapping of the file went away */
    MT_KIND_FILE_MMAP = 4, /* MAC mpo_file_check_mmap: mmap(2) intent, prot/flags */
    MT_KIND_PATH = 5,      /* the path of a vnode id, multi-slot */
    MT_KIND_MARK = 6,      /* a marker from the kext itself (start, config change) */
    MT_KIND_PROC = 7,      /* the name of h.pid (ABI 1.2) */
    MT_KIND_OPEN = 8,      /* MAC mpo_vnode_notify_open: an open took its usecount (ABI 1.2) */
    MT_KIND_CLOSE = 9,     /* VNOP_CLOSE from vn_close: an open's usecount goes next (ABI 1.2) */
    MT_KIND__COUNT = 10
};

/* Event mask bits for mt_config.event_mask: bit (1 << kind). Literal values
 * (bindgen cannot evaluate enum constants inside macros), pinned to the enum
 * by the checks at the end of this file. */
#define MT_EVMASK_MMAP 0x02u
#define MT_EVMASK_PAGEIN 0x04u
#define MT_EVMASK_MNOMAP 0x08u
#define MT_EVMASK_FILE_MMAP 0x10u
#define MT_EVMASK_PATH 0x20u
#define MT_EVMASK_MARK 0x40u
#define MT_EVMASK_PROC 0x80u
#define MT_EVMASK_OPEN 0x100u
#define MT_EVMASK_CLOSE 0x200u
#define MT_EVMASK_ALL 0x3feu

/* --------------------------------------------------------- record flags */

/* mt_rec_header.flags. The low two bits say how the vnode counts in the
 * record were obtained; the kext validates the offset method at start. */
#define MT_RF_COUNTS_MASK 0x03u
#define MT_RF_COUNTS_NONE 0x00u      /* no counts in this record */
#define MT_RF_COUNTS_OFFSET 0x01u    /* read at validated struct vnode offsets */
#define MT_RF_COUNTS_ISINUSE 0x02u   /* vnode_isinuse() search: usecount - kusecount */
#define MT_RF_IOCOUNT_UNKNOWN 0x04u  /* iocount not available (isinuse method) */
#define MT_RF_COUNTS_SATURATED 0x08u /* a count exceeded 0xffff and was clamped */
#define MT_RF_TRUNCATED 0x10u        /* path cut at MT_PATH_MAX, or duration clamped */
#define MT_RF_ALL 0x1fu

/* --------------------------------------------------------------- records */

/* The 40-byte header shared by every record head slot. */
struct mt_rec_header {
    uint32_t stamp;        /* (shard position + 1) & MT_STAMP_MASK; commit flag */
    uint32_t drops_before; /* shard's cumulative drops at reservation, mod 2^32 */
    uint8_t kind;          /* enum mt_kind */
    uint8_t nslots;        /* slots this record occupies, >= 1 */
    uint8_t flags;         /* MT_RF_* */
    uint8_t error;         /* errno returned by the original operation (0..255) */
    uint32_t pid;          /* process that caused the event */
    uint64_t timestamp_ns; /* nanoseconds since boot (mach_absolute_time based) */
    uint64_t tid;          /* thread_tid() of the causing thread */
    uint64_t vnode_id;     /* keyed hash of (vnode, vid); never a kernel address */
};

/* Vnode counts as snapshotted by a hook, saturated to 16 bits. What each
 * field holds depends on the record's MT_RF_COUNTS_* method:
 *
 *   MT_RF_COUNTS_OFFSET: raw fields read at validated offsets.
 *     usecount  = v_usecount, every usecount including the kusecount ones
 *     kusecount = v_kusecount, the O_EVTONLY / kernel-internal references
 *                 that vnode_isinuse() does not count
 *     iocount   = raw v_iocount: the dispatching caller's iocount included,
 *                 and the link-lock iocount that vnode_iocount() subtracts
 *                 while VE_LINKCHANGE is set (bsd/vfs/vfs_subr.c,
 *                 xnu-11417.121.6)
 *   MT_RF_COUNTS_ISINUSE: the vnode_isinuse() binary search.
 *     usecount  = v_usecount - v_kusecount (what ubc_isinuse_locked
 *                 compares; bsd/kern/ubc_subr.c), NOT v_usecount;
 *                 65536 and above saturates (MT_RF_COUNTS_SATURATED)
 *     kusecount = 0, iocount = 0 (unknown; MT_RF_IOCOUNT_UNKNOWN is set)
 *   MT_RF_COUNTS_NONE: all 0, meaningless.
 *
 * v_kusecount is validated only through that difference: discovery checks
 * that vnode_isinuse() agrees with (usecount - kusecount) on the probe and
 * on sampled vnodes, and that kusecount stays put while vnode_ref moves
 * usecount. No public KPI moves v_kusecount alone (vnode_ref_ext with
 * O_EVTONLY is not exported), so a wrong kusecount offset holding a value
 * that equals the true kusecount on every checked vnode (0 on the probe)
 * would pass; a sampled vnode with an O_EVTONLY watcher catches it. */
struct mt_counts {
    uint16_t usecount;  /* see above: v_usecount, or usecount - kusecount */
    uint16_t kusecount; /* v_kusecount; 0 with MT_RF_COUNTS_ISINUSE */
    uint16_t iocount;   /* raw v_iocount; 0 with MT_RF_IOCOUNT_UNKNOWN */
};

/* MT_KIND_MMAP: VNOP_MMAP. Counts are taken before the original op, so they
 * show the usecount before ubc_map takes its mapping reference. */
struct mt_rec_mmap {
    struct mt_rec_header h;
    uint32_t fflags;      /* a_fflags: PROT_READ|PROT_WRITE|PROT_EXEC */
    uint32_t vid;         /* vnode_vid(): changes when the vnode is recycled */
    uint32_t duration_ns; /* time spent in the original VNOP_MMAP, clamped */
    struct mt_counts counts;
    uint8_t reserved0[6];
};

/* MT_KIND_PAGEIN: VNOP_PAGEIN, one cluster. */
struct mt_rec_pagein {
    struct mt_rec_header h;
    int64_t f_offset;     /* a_f_offset: file offset of the cluster */
    uint32_t size;        /* a_size: bytes requested */
    uint32_t duration_ns; /* time spent in the original VNOP_PAGEIN, clamped */
    struct mt_counts counts;
    uint16_t upl_flags; /* a_flags (UPL_* bits), low 16 bits */
};

/* MT_KIND_MNOMAP: VNOP_MNOMAP. Counts are taken before the original op, so the
 * usecount still includes the mapping reference that ubc_unmap drops next. */
struct mt_rec_mnomap {
    struct mt_rec_header h;
    uint32_t vid;
    uint32_t duration_ns;
    struct mt_counts counts;
    uint8_t reserved0[10];
};

/* MT_KIND_FILE_MMAP: mmap(2) as seen by MAC mpo_file_check_mmap. vnode_id is
 * 0 (the hook gets a fileglob); the VNOP_MMAP that follows on the same tid
 * names the vnode. */
struct mt_rec_file_mmap {
    struct mt_rec_header h;
    uint64_t file_pos; /* offset argument of mmap(2) */
    uint32_t prot;     /* PROT_* requested */
    uint32_t maxprot;  /* PROT_* maximum allowed */
    uint32_t mmap_flags; /* MAP_* flags */
    uint32_t reserved0;
};

/* MT_KIND_PATH head slot; path bytes continue in MT_KIND_PATH continuation
 * slots (struct mt_rec_cont), nslots = 1 + ceil((len - 16) / 60). The path
 * belongs to h.vnode_id; later records of that id carry no path. Not
 * NUL-terminated; MT_RF_TRUNCATED when cut at MT_PATH_MAX. */
struct mt_rec_path {
    struct mt_rec_header h;
    uint32_t vid;
    uint16_t path_len; /* total path bytes across all slots */
    uint16_t reserved0;
    uint8_t path[16]; /* first bytes of the path */
};
#define MT_PATH_HEAD_BYTES 16

/* A continuation slot of a multi-slot record. */
struct mt_rec_cont {
    uint32_t marker; /* MT_STAMP_CONT | index within the record (1..nslots-1) */
    uint8_t data[60];
};
#define MT_PATH_CONT_BYTES 60

/* MT_KIND_MARK: something the kext did. */
enum mt_mark {
    MT_MARK_START = 1,          /* core initialised; first record of a generation */
    MT_MARK_CONFIG = 2,         /* a config write was applied */
    MT_MARK_VECTOR_PATCHED = 3, /* a vnode-op vector was hooked */
};
struct mt_rec_mark {
    struct mt_rec_header h;
    uint32_t mark; /* enum mt_mark */
    uint32_t arg0; /* MARK_CONFIG: event_mask; VECTOR_PATCHED: vector index */
    uint64_t arg1; /* MARK_CONFIG: flags << 32 | pid; START: slots per shard */
    uint64_t arg2; /* START: number of shards */
};

/* MT_KIND_PROC: the name of process h.pid (proc_selfname: p_name, or p_comm
 * before macOS 12), recorded by the core the first time it records an event
 * of that pid, again after the pid execs, again for every pid after a config
 * write (so a reader that joined late learns the names), and again for a pid
 * whose PROC record a full shard dropped. vnode_id is 0. name is NUL-padded, not
 * NUL-terminated when all 24 bytes are used; MT_RF_TRUNCATED when cut. */
struct mt_rec_proc {
    struct mt_rec_header h;
    uint8_t name[24];
};
#define MT_PROC_NAME_BYTES 24

/* MT_KIND_OPEN: a successful open (mpo_vnode_notify_open, called by
 * vn_open_auth_finish right after vnode_ref_ext took the open's usecount;
 * bsd/vfs/vfs_vnops.c). Counts include that reference. */
struct mt_rec_open {
    struct mt_rec_header h;
    uint32_t vid;
    uint32_t fmode; /* FREAD|FWRITE|O_EVTONLY|... as passed to the hook */
    struct mt_counts counts;
    uint8_t reserved0[10];
};

/* MT_KIND_CLOSE: VNOP_CLOSE. vn_close calls it on the last close of an
 * open file (fileglob), then vnode_rele_ext drops the open's usecount
 * (bsd/vfs/vfs_vnops.c). Counts are taken before the original op, so they
 * still include that reference. h.pid is the process that dropped the last
 * reference to the open file, not necessarily the one that opened it. */
struct mt_rec_close {
    struct mt_rec_header h;
    uint32_t vid;
    uint32_t fflag; /* a_fflag: the open's FREAD|FWRITE|O_EVTONLY|... */
    uint32_t duration_ns;
    struct mt_counts counts;
    uint8_t reserved0[6];
};

/* ------------------------------------------------- batches (sysctl events) */

/* A read of kern.maptrace.events returns one batch: a batch header, then for
 * every shard that had records a segment header followed by nslots raw
 * 64-byte slots in shard order. Everything is 64-byte aligned. */
#define MT_BATCH_MAGIC 0x3142544du   /* "MTB1" little-endian */
#define MT_SEGMENT_MAGIC 0x3153544du /* "MTS1" little-endian */

#define MT_BF_TRUNCATED 0x1u /* records were left behind for lack of room */
#define MT_BF_ALL 0x1u

struct mt_batch_header {
    uint32_t magic;       /* MT_BATCH_MAGIC */
    uint16_t abi_version; /* MT_ABI_VERSION */
    uint16_t header_size; /* sizeof(struct mt_batch_header) */
    uint32_t flags;       /* MT_BF_* */
    uint32_t nsegments;   /* segment headers that follow */
    uint64_t batch_no;    /* +1 per drain that returned data, per generation */
    uint64_t generation;  /* random per kext load; a change means a reload */
    uint64_t total_bytes; /* bytes of this batch including this header */
    uint64_t total_records; /* records in this batch */
    uint64_t total_dropped; /* cumulative drops over all shards */
    uint64_t drain_ns;      /* timestamp of the drain */
};

struct mt_segment_header {
    uint32_t magic; /* MT_SEGMENT_MAGIC */
    uint16_t shard;
    uint16_t reserved0;
    uint32_t nslots;   /* 64-byte slots that follow */
    uint32_t nrecords; /* records that start in those slots */
    uint64_t first_pos; /* 64-bit shard position of the first slot */
    uint64_t dropped_cumulative; /* shard's drops up to the end of this segment */
    uint64_t backlog_after;      /* slots reserved but not drained after this read */
    uint64_t ts_min;             /* smallest record timestamp */
    uint64_t ts_max;             /* largest record timestamp */
    uint64_t reserved1;
};

/* -------------------------------------------------- config (sysctl config) */

#define MT_CONFIG_VERSION 1
#define MT_CF_ENABLE 0x1u      /* record events at all */
#define MT_CF_PID_FILTER 0x2u  /* only events of mt_config.pid (markers: all) */
#define MT_CF_PID_EXCLUDE 0x4u /* all events except those of mt_config.pid (markers: all) */
#define MT_CF_ALL 0x7u

/* Written whole; wrong size, wrong version, unknown flags or mask bits, both
 * PID_FILTER and PID_EXCLUDE, or non-zero reserved words give EINVAL and
 * change nothing. */
struct mt_config {
    uint16_t version; /* MT_CONFIG_VERSION */
    uint16_t size;    /* sizeof(struct mt_config) */
    uint32_t flags;   /* MT_CF_* */
    uint32_t event_mask; /* MT_EVMASK_* */
    uint32_t pid;
    uint32_t reserved[4];
};

/* ---------------------------------------------------- stats (sysctl stats) */

#define MT_STATS_MAGIC 0x3154534du /* "MST1" little-endian */

/* How the kext reads vnode counts (also in every record's flags). */
enum mt_probe_method {
    MT_PROBE_NONE = 0,
    MT_PROBE_OFFSET = 1,  /* validated v_usecount/v_kusecount/v_iocount offsets */
    MT_PROBE_ISINUSE = 2, /* vnode_isinuse() search: usecount - kusecount */
};

/* kern.maptrace.stats: this header, then nshards mt_shard_stats. */
struct mt_stats_header {
    uint32_t magic;       /* MT_STATS_MAGIC */
    uint16_t abi_version; /* MT_ABI_VERSION */
    uint16_t header_size;
    uint32_t nshards;
    uint32_t slots_per_shard;
    uint32_t probe_method;    /* enum mt_probe_method */
    uint32_t vectors_patched; /* vnode-op vectors hooked */
    uint32_t config_flags;    /* current MT_CF_* */
    uint32_t event_mask;      /* current MT_EVMASK_* */
    uint64_t generation;
    uint64_t hook_calls;     /* all hook invocations (vnode ops, MAC, kauth) */
    uint64_t hooks_in_flight; /* hooks running right now */
    uint64_t filtered;       /* events not recorded because of the config */
    uint64_t errors;         /* unexpected states (fail-open paths taken) */
    uint64_t paths_skipped;  /* PATH records skipped (no free path buffer); ABI 1.1 */
};

struct mt_shard_stats {
    uint64_t produced_slots; /* slots ever reserved */
    uint64_t dropped;        /* records dropped because the shard was full */
    uint64_t drained_slots;  /* slots handed to the reader */
    uint64_t drained_records;
    uint64_t backlog_slots; /* reserved, not yet drained */
    uint64_t reserved0[3];
};

/* ------------------------------------------------------- layout checks */

#define MT_ABI_CHECK(expr, what) _Static_assert(expr, "maptrace_abi: " what)
MT_ABI_CHECK(MT_EVMASK_MMAP == 1u << MT_KIND_MMAP, "mmap mask bit");
MT_ABI_CHECK(MT_EVMASK_PAGEIN == 1u << MT_KIND_PAGEIN, "pagein mask bit");
MT_ABI_CHECK(MT_EVMASK_MNOMAP == 1u << MT_KIND_MNOMAP, "mnomap mask bit");
MT_ABI_CHECK(MT_EVMASK_FILE_MMAP == 1u << MT_KIND_FILE_MMAP, "file_mmap mask bit");
MT_ABI_CHECK(MT_EVMASK_PATH == 1u << MT_KIND_PATH, "path mask bit");
MT_ABI_CHECK(MT_EVMASK_MARK == 1u << MT_KIND_MARK, "mark mask bit");
MT_ABI_CHECK(MT_EVMASK_PROC == 1u << MT_KIND_PROC, "proc mask bit");
MT_ABI_CHECK(MT_EVMASK_OPEN == 1u << MT_KIND_OPEN, "open mask bit");
MT_ABI_CHECK(MT_EVMASK_CLOSE == 1u << MT_KIND_CLOSE, "close mask bit");
MT_ABI_CHECK(MT_EVMASK_ALL == ((1u << MT_KIND__COUNT) - 2u), "mask of all kinds");
MT_ABI_CHECK(sizeof(struct mt_rec_header) == 40, "record header size");
MT_ABI_CHECK(offsetof(struct mt_rec_header, drops_before) == 4, "drops_before offset");
MT_ABI_CHECK(offsetof(struct mt_rec_header, kind) == 8, "kind offset");
MT_ABI_CHECK(offsetof(struct mt_rec_header, pid) == 12, "pid offset");
MT_ABI_CHECK(offsetof(struct mt_rec_header, timestamp_ns) == 16, "timestamp offset");
MT_ABI_CHECK(offsetof(struct mt_rec_header, tid) == 24, "tid offset");
MT_ABI_CHECK(offsetof(struct mt_rec_header, vnode_id) == 32, "vnode_id offset");
MT_ABI_CHECK(sizeof(struct mt_counts) == 6, "counts size");
MT_ABI_CHECK(sizeof(struct mt_rec_mmap) == MT_SLOT_SIZE, "mmap record size");
MT_ABI_CHECK(offsetof(struct mt_rec_mmap, counts) == 52, "mmap counts offset");
MT_ABI_CHECK(sizeof(struct mt_rec_pagein) == MT_SLOT_SIZE, "pagein record size");
MT_ABI_CHECK(offsetof(struct mt_rec_pagein, f_offset) == 40, "pagein offset offset");
MT_ABI_CHECK(offsetof(struct mt_rec_pagein, counts) == 56, "pagein counts offset");
MT_ABI_CHECK(sizeof(struct mt_rec_mnomap) == MT_SLOT_SIZE, "mnomap record size");
MT_ABI_CHECK(sizeof(struct mt_rec_file_mmap) == MT_SLOT_SIZE, "file_mmap record size");
MT_ABI_CHECK(sizeof(struct mt_rec_path) == MT_SLOT_SIZE, "path record size");
MT_ABI_CHECK(offsetof(struct mt_rec_path, path) == 64 - MT_PATH_HEAD_BYTES, "path bytes");
MT_ABI_CHECK(sizeof(struct mt_rec_cont) == MT_SLOT_SIZE, "continuation size");
MT_ABI_CHECK(sizeof(struct mt_rec_mark) == MT_SLOT_SIZE, "mark record size");
MT_ABI_CHECK(sizeof(struct mt_rec_proc) == MT_SLOT_SIZE, "proc record size");
MT_ABI_CHECK(sizeof(struct mt_rec_open) == MT_SLOT_SIZE, "open record size");
MT_ABI_CHECK(offsetof(struct mt_rec_open, counts) == 48, "open counts offset");
MT_ABI_CHECK(sizeof(struct mt_rec_close) == MT_SLOT_SIZE, "close record size");
MT_ABI_CHECK(offsetof(struct mt_rec_close, counts) == 52, "close counts offset");
MT_ABI_CHECK(sizeof(struct mt_batch_header) == 64, "batch header size");
MT_ABI_CHECK(sizeof(struct mt_segment_header) == 64, "segment header size");
MT_ABI_CHECK(sizeof(struct mt_config) == 32, "config size");
MT_ABI_CHECK(sizeof(struct mt_stats_header) == 80, "stats header size");
MT_ABI_CHECK(sizeof(struct mt_shard_stats) == 64, "shard stats size");
MT_ABI_CHECK(1 + (MT_PATH_MAX - MT_PATH_HEAD_BYTES + MT_PATH_CONT_BYTES - 1) /
                     MT_PATH_CONT_BYTES ==
                 MT_RECORD_MAX_SLOTS,
             "largest path record");

#endif /* MAPTRACE_ABI_H */
