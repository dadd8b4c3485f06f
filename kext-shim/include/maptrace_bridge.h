/*
 * maptrace_bridge.h - the function ABI between the C shim and the Rust core.
 *
 * mt_core_*  are implemented in Rust (src/ffi.rs) and called directly by the
 *            shim. Rust never calls through a function pointer and never hands
 *            one to the kernel: every pointer the kernel calls lives in C.
 * mt_kpi_*   are implemented in C by the shim and called by Rust (only the
 *            panic hook, in kernel builds).
 *
 * Every export has a typedef as well as a prototype; src/ffi.rs binds each
 * Rust function to its typedef, so a signature drift fails to compile.
 *
 * Context rules for the shim:
 *   - mt_core_record*, mt_core_wants, mt_core_proc_*, mt_core_vector_original: any context,
 *     including hooks that must not sleep. They never block, allocate or
 *     sleep: lock-free, bounded work.
 *   - mt_core_init/shutdown, mt_core_vector_insert, mt_core_config_set,
 *     mt_core_drain_*, mt_core_stats: thread context. The shim serialises
 *     mt_core_vector_insert under its patch lock and the drain functions under
 *     its reader mutex.
 */
#ifndef MAPTRACE_BRIDGE_H
#define MAPTRACE_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "maptrace_abi.h"

/* Opaque: the core's state, placed by mt_core_init in shim-provided memory. */
struct mt_core;

/* Results of mt_core_* calls that can fail: 0 or a positive errno value. */
#define MT_OK 0
#define MT_EINVAL 22 /* bad argument; nothing changed */
#define MT_ENOSPC 28 /* a bounded table is full */
#define MT_ENOMEM 12 /* the caller's buffer is too small */
#define MT_EBUSY 16  /* another drain is under way (the shim serialises: a bug) */

/* Results of mt_core_record*: what happened to the event. */
enum mt_record_result {
    MT_RECORDED = 0, /* in the ring */
    MT_FILTERED = 1, /* the config excludes it (or the core is shut down) */
    MT_DROPPED = 2,  /* the shard was full; counted exactly */
    MT_REJECTED = 3, /* malformed event (unknown kind); counted as an error */
};

/* Parameters fixed for the life of a core. */
struct mt_core_params {
    uint32_t nshards;         /* 1 .. MT_CORE_MAX_SHARDS */
    uint32_t slots_per_shard; /* power of two, MT_CORE_MIN_SLOTS .. MT_CORE_MAX_SLOTS */
    uint64_t hash_key[2];     /* secret key for vnode ids; random per load */
    uint64_t generation;      /* random per load; copied into every batch */
    uint32_t probe_method;    /* enum mt_probe_method, reported in stats */
    uint32_t reserved0;
    uint64_t start_ns;        /* clock at start: the START marker's timestamp */
};
#define MT_CORE_MAX_SHARDS MT_MAX_SHARDS
#define MT_CORE_MIN_SLOTS 64
#define MT_CORE_MAX_SLOTS (1u << 24)
/* Vnode-op vectors the core can remember (each FS and vnode kind has one). */
#define MT_CORE_MAX_VECTORS 64

/* The vnode operations the shim hooks, indexing mt_core_vector_* originals. */
enum mt_vop {
    MT_VOP_MMAP = 0,
    MT_VOP_PAGEIN = 1,
    MT_VOP_MNOMAP = 2,
    MT_VOP_CLOSE = 3,
    MT_VOP__COUNT = 4
};

/* One event as the shim saw it; the core filters, hashes and encodes it.
 * Fields a kind does not use are zero. vnode_ptr is hashed with vid under
 * the load's key and never stored or copied anywhere. */
struct mt_event {
    uint32_t kind;  /* enum mt_kind: MMAP, PAGEIN, MNOMAP, FILE_MMAP, OPEN, CLOSE */
    uint32_t pid;
    uint64_t tid;
    uint64_t timestamp_ns; /* when the operation started */
    uint64_t duration_ns;  /* time in the original operation */
    uint64_t vnode_ptr;    /* kernel address of the vnode (hashed, not kept) */
    uint32_t vid;
    int32_t error;          /* errno of the original operation */
    int64_t offset;         /* PAGEIN: a_f_offset; FILE_MMAP: file_pos */
    uint64_t size;          /* PAGEIN: a_size */
    int32_t usecount;       /* -1 when unknown */
    int32_t kusecount;      /* -1 when unknown */
    int32_t iocount;        /* -1 when unknown */
    uint32_t count_method;  /* enum mt_probe_method used for the counts above */
    uint32_t prot;          /* MMAP: a_fflags; FILE_MMAP: prot */
    uint32_t maxprot;       /* FILE_MMAP */
    uint32_t flags;         /* PAGEIN: a_flags; FILE_MMAP: mmap flags; OPEN: fmode;
                             * CLOSE: a_fflag */
    uint32_t reserved0;
};

/* ------------------------------------------------------------ lifecycle */

/* Bytes of memory mt_core_init needs for these params (including alignment
 * slack); 0 when the params are invalid. */
typedef size_t (*mt_core_mem_size_fn)(const struct mt_core_params *params);
size_t mt_core_mem_size(const struct mt_core_params *params);

/* Lays out a core in mem (len bytes, any alignment). Returns NULL when the
 * params are invalid or len is too small. mem must stay valid and untouched
 * until mt_core_shutdown returned and no hook can still be inside the core. */
typedef struct mt_core *(*mt_core_init_fn)(void *mem, size_t len,
                                            const struct mt_core_params *params);
struct mt_core *mt_core_init(void *mem, size_t len, const struct mt_core_params *params);

/* Stops recording: later mt_core_record* calls return MT_FILTERED. The
 * memory may be freed once the shim's in-flight count has drained. */
typedef void (*mt_core_shutdown_fn)(struct mt_core *core);
void mt_core_shutdown(struct mt_core *core);

/* ------------------------------------------------------------- hot path */

/* Cheap pre-check: would an event of this kind from this pid be recorded?
 * Lets a hook skip the count snapshot and clock reads. Returns 1 or 0; a 0
 * counts the event as filtered (the hook records nothing after it). */
typedef int32_t (*mt_core_wants_fn)(const struct mt_core *core, uint32_t kind, uint32_t pid);
int32_t mt_core_wants(const struct mt_core *core, uint32_t kind, uint32_t pid);

/* Records one fixed-size event on shard (shard_hint % nshards). Returns enum
 * mt_record_result. */
typedef int32_t (*mt_core_record_fn)(const struct mt_core *core, uint32_t shard_hint,
                                     const struct mt_event *ev);
int32_t mt_core_record(const struct mt_core *core, uint32_t shard_hint, const struct mt_event *ev);

/* Records a PATH record naming ev->vnode_ptr (ev->kind is ignored). path is
 * len bytes, not necessarily NUL-terminated; cut at MT_PATH_MAX. */
typedef int32_t (*mt_core_record_path_fn)(const struct mt_core *core, uint32_t shard_hint,
                                          const struct mt_event *ev, const uint8_t *path,
                                          size_t len);
int32_t mt_core_record_path(const struct mt_core *core, uint32_t shard_hint,
                            const struct mt_event *ev, const uint8_t *path, size_t len);

/* Whether the shim should record the name of pid now: PROC records are
 * wanted for it and it was not named since it last exec'd, the last config
 * write or the last drop of its PROC record. A 1 marks it named (the shim
 * then calls mt_core_record_proc); never counts as filtered. Lock-free. */
typedef int32_t (*mt_core_proc_claim_fn)(const struct mt_core *core, uint32_t pid);
int32_t mt_core_proc_claim(const struct mt_core *core, uint32_t pid);

/* pid exec'd: its next event names it again. Lock-free. */
typedef void (*mt_core_proc_forget_fn)(const struct mt_core *core, uint32_t pid);
void mt_core_proc_forget(const struct mt_core *core, uint32_t pid);

/* Records a PROC record naming ev->pid (ev->kind is ignored): name is len
 * bytes, used up to its first NUL, cut at MT_PROC_NAME_BYTES. A dropped one
 * forgets pid, so its next event names it again. */
typedef int32_t (*mt_core_record_proc_fn)(const struct mt_core *core, uint32_t shard_hint,
                                          const struct mt_event *ev, const uint8_t *name,
                                          size_t len);
int32_t mt_core_record_proc(const struct mt_core *core, uint32_t shard_hint,
                            const struct mt_event *ev, const uint8_t *name, size_t len);

/* --------------------------------------------------- vnode-op vectors */

/* The original entry for op of the hooked vector at vector_addr, or 0 when the
 * vector is not in the table or the shim left op unhooked in it. Lock-free. */
typedef uint64_t (*mt_core_vector_original_fn)(const struct mt_core *core, uint64_t vector_addr,
                                               uint32_t op);
uint64_t mt_core_vector_original(const struct mt_core *core, uint64_t vector_addr, uint32_t op);

/* Remembers the original entries of a vector before the shim patches it.
 * originals has MT_VOP__COUNT entries (0: an op the shim leaves unhooked in
 * that vector); now_ns stamps the VECTOR_PATCHED
 * marker. Returns MT_OK, MT_EINVAL (already
 * present, zero address) or MT_ENOSPC (table full). Serialised by the shim. */
typedef int32_t (*mt_core_vector_insert_fn)(const struct mt_core *core, uint64_t vector_addr,
                                            const uint64_t *originals, uint64_t now_ns);
int32_t mt_core_vector_insert(const struct mt_core *core, uint64_t vector_addr,
                              const uint64_t *originals, uint64_t now_ns);

/* Copies out entry index (0 .. count-1) so the shim can restore it at unload.
 * Returns MT_OK or MT_EINVAL past the end. */
typedef int32_t (*mt_core_vector_get_fn)(const struct mt_core *core, uint32_t index,
                                         uint64_t *vector_addr, uint64_t *originals);
int32_t mt_core_vector_get(const struct mt_core *core, uint32_t index, uint64_t *vector_addr,
                           uint64_t *originals);

/* Forgets a hooked vector whose entries the shim restored (its filesystem is
 * going away); lookups miss from then on. A later insert of the same
 * address with the same originals revives its slot; with other originals it
 * is a new entry. MT_OK, or
 * MT_EINVAL when it is not in the table. Thread context, under the shim's
 * patch lock. */
typedef int32_t (*mt_core_vector_remove_fn)(const struct mt_core *core, uint64_t vector_addr);
int32_t mt_core_vector_remove(const struct mt_core *core, uint64_t vector_addr);

/* Number of vectors in the table. */
typedef uint32_t (*mt_core_vector_count_fn)(const struct mt_core *core);
uint32_t mt_core_vector_count(const struct mt_core *core);

/* ------------------------------------------------------------- config */

/* Validates and applies a struct mt_config given as raw bytes; now_ns stamps
 * the CONFIG marker. Returns MT_OK or MT_EINVAL (and nothing changed). */
typedef int32_t (*mt_core_config_set_fn)(const struct mt_core *core, const void *buf, size_t len,
                                         uint64_t now_ns);
int32_t mt_core_config_set(const struct mt_core *core, const void *buf, size_t len,
                           uint64_t now_ns);

/* Writes the current config. */
typedef void (*mt_core_config_get_fn)(const struct mt_core *core, struct mt_config *out);
void mt_core_config_get(const struct mt_core *core, struct mt_config *out);

/* -------------------------------------------------------------- reader */

/* Bytes a full batch can take: the buffer size the reader should allocate
 * (and what a sysctl size query reports). */
typedef size_t (*mt_core_drain_capacity_fn)(const struct mt_core *core);
size_t mt_core_drain_capacity(const struct mt_core *core);

/* Assembles one batch into buf (kernel memory) without consuming anything:
 * committed records of every shard, round-robin, up to len bytes. Writes the
 * batch length to *out_len (0 when there was nothing). Returns MT_OK,
 * MT_ENOMEM when len cannot hold even a header and one record, or MT_EBUSY
 * when another drain holds the reader state; each is the errno the events
 * sysctl returns (ENOMEM makes a reader retry with a larger buffer, so a
 * busy reader must not say ENOMEM). Callers hold
 * the reader mutex from prepare to commit/abort. */
typedef int32_t (*mt_core_drain_prepare_fn)(const struct mt_core *core, void *buf, size_t len,
                                            uint64_t now_ns, size_t *out_len);
int32_t mt_core_drain_prepare(const struct mt_core *core, void *buf, size_t len, uint64_t now_ns,
                              size_t *out_len);

/* Consumes what the last prepare copied (call after copyout succeeded). */
typedef void (*mt_core_drain_commit_fn)(const struct mt_core *core);
void mt_core_drain_commit(const struct mt_core *core);

/* Forgets the last prepare (copyout failed): the records stay in the ring. */
typedef void (*mt_core_drain_abort_fn)(const struct mt_core *core);
void mt_core_drain_abort(const struct mt_core *core);

/* --------------------------------------------------------------- stats */

/* Counters only the shim knows, merged into the stats output. */
struct mt_shim_counters {
    uint64_t hook_calls;
    uint64_t hooks_in_flight;
    uint64_t errors;
    uint64_t paths_skipped; /* PATH records skipped: no free path buffer */
};

/* Bytes of the stats output: mt_stats_header + nshards * mt_shard_stats. */
typedef size_t (*mt_core_stats_size_fn)(const struct mt_core *core);
size_t mt_core_stats_size(const struct mt_core *core);

/* Writes the stats output into buf. Returns MT_OK or MT_ENOMEM. */
typedef int32_t (*mt_core_stats_fn)(const struct mt_core *core,
                                    const struct mt_shim_counters *shim, void *buf, size_t len);
int32_t mt_core_stats(const struct mt_core *core, const struct mt_shim_counters *shim, void *buf,
                      size_t len);

/* ------------------------------------------------- implemented in C */

/* Called by the core's panic handler (kernel builds only; unreachable by
 * construction: the core denies panicking constructs). Never returns. */
__attribute__((noreturn)) void mt_kpi_panic(const char *file, uint32_t file_len, uint32_t line);

#endif /* MAPTRACE_BRIDGE_H */
