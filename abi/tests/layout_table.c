/*
 * layout_table.c - the C compiler's view of maptrace_abi.h, as name/value
 * pairs. abi/tests/layout.rs compares every entry with the Rust view of the
 * bindgen-generated types (the gtk-rs layout.c pattern), so a divergence
 * between the two compilers is a test failure, not a corrupted stream.
 */
#include <stddef.h>
#include <stdint.h>

#include "maptrace_abi.h"

struct mt_layout_entry {
    const char *name;
    uint64_t value;
};

#define SIZE(t) {"sizeof " #t, sizeof(struct t)}
#define ALIGN(t) {"alignof " #t, _Alignof(struct t)}
#define OFF(t, f) {#t "." #f, offsetof(struct t, f)}
#define CONST(c) {#c, (uint64_t)(c)}

const struct mt_layout_entry mt_abi_layout_table[] = {
    SIZE(mt_rec_header), ALIGN(mt_rec_header),
    OFF(mt_rec_header, stamp), OFF(mt_rec_header, drops_before), OFF(mt_rec_header, kind),
    OFF(mt_rec_header, nslots), OFF(mt_rec_header, flags), OFF(mt_rec_header, error),
    OFF(mt_rec_header, pid), OFF(mt_rec_header, timestamp_ns), OFF(mt_rec_header, tid),
    OFF(mt_rec_header, vnode_id),
    SIZE(mt_counts), OFF(mt_counts, usecount), OFF(mt_counts, kusecount), OFF(mt_counts, iocount),
    SIZE(mt_rec_mmap), OFF(mt_rec_mmap, fflags), OFF(mt_rec_mmap, vid),
    OFF(mt_rec_mmap, duration_ns), OFF(mt_rec_mmap, counts),
    SIZE(mt_rec_pagein), OFF(mt_rec_pagein, f_offset), OFF(mt_rec_pagein, size),
    OFF(mt_rec_pagein, duration_ns), OFF(mt_rec_pagein, counts), OFF(mt_rec_pagein, upl_flags),
    SIZE(mt_rec_mnomap), OFF(mt_rec_mnomap, vid), OFF(mt_rec_mnomap, duration_ns),
    OFF(mt_rec_mnomap, counts),
    SIZE(mt_rec_file_mmap), OFF(mt_rec_file_mmap, file_pos), OFF(mt_rec_file_mmap, prot),
    OFF(mt_rec_file_mmap, maxprot), OFF(mt_rec_file_mmap, mmap_flags),
    SIZE(mt_rec_path), OFF(mt_rec_path, vid), OFF(mt_rec_path, path_len), OFF(mt_rec_path, path),
    SIZE(mt_rec_cont), OFF(mt_rec_cont, marker), OFF(mt_rec_cont, data),
    SIZE(mt_rec_mark), OFF(mt_rec_mark, mark), OFF(mt_rec_mark, arg0), OFF(mt_rec_mark, arg1),
    OFF(mt_rec_mark, arg2),
    SIZE(mt_rec_proc), OFF(mt_rec_proc, name),
    SIZE(mt_rec_open), OFF(mt_rec_open, vid), OFF(mt_rec_open, fmode), OFF(mt_rec_open, counts),
    SIZE(mt_rec_close), OFF(mt_rec_close, vid), OFF(mt_rec_close, fflag),
    OFF(mt_rec_close, duration_ns), OFF(mt_rec_close, counts),
    SIZE(mt_batch_header), ALIGN(mt_batch_header), OFF(mt_batch_header, magic),
    OFF(mt_batch_header, abi_version), OFF(mt_batch_header, header_size),
    OFF(mt_batch_header, flags), OFF(mt_batch_header, nsegments), OFF(mt_batch_header, batch_no),
    OFF(mt_batch_header, generation), OFF(mt_batch_header, total_bytes),
    OFF(mt_batch_header, total_records), OFF(mt_batch_header, total_dropped),
    OFF(mt_batch_header, drain_ns),
    SIZE(mt_segment_header), OFF(mt_segment_header, magic), OFF(mt_segment_header, shard),
    OFF(mt_segment_header, nslots), OFF(mt_segment_header, nrecords),
    OFF(mt_segment_header, first_pos), OFF(mt_segment_header, dropped_cumulative),
    OFF(mt_segment_header, backlog_after), OFF(mt_segment_header, ts_min),
    OFF(mt_segment_header, ts_max),
    SIZE(mt_config), OFF(mt_config, version), OFF(mt_config, size), OFF(mt_config, flags),
    OFF(mt_config, event_mask), OFF(mt_config, pid), OFF(mt_config, reserved),
    SIZE(mt_stats_header), OFF(mt_stats_header, nshards), OFF(mt_stats_header, probe_method),
    OFF(mt_stats_header, generation), OFF(mt_stats_header, hook_calls),
    OFF(mt_stats_header, hooks_in_flight), OFF(mt_stats_header, errors),
    SIZE(mt_shard_stats), OFF(mt_shard_stats, produced_slots), OFF(mt_shard_stats, dropped),
    OFF(mt_shard_stats, drained_slots), OFF(mt_shard_stats, drained_records),
    OFF(mt_shard_stats, backlog_slots),
    CONST(MT_ABI_VERSION), CONST(MT_SLOT_SIZE), CONST(MT_STAMP_MASK), CONST(MT_STAMP_CONT),
    CONST(MT_RECORD_MAX_SLOTS), CONST(MT_PATH_MAX), CONST(MT_KIND__COUNT),
    CONST(MT_BATCH_MAGIC), CONST(MT_SEGMENT_MAGIC), CONST(MT_STATS_MAGIC), CONST(MT_EVMASK_ALL),
    CONST(MT_RF_ALL), CONST(MT_CF_ALL), CONST(MT_CONFIG_VERSION),
};

const size_t mt_abi_layout_table_len =
    sizeof(mt_abi_layout_table) / sizeof(mt_abi_layout_table[0]);
