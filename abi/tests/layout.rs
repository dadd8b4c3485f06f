//! The C compiler's view of `maptrace_abi.h` (`tests/layout_table.c`, built by
//! `build.rs`) against Rust's view of the bindgen types: every size, offset
//! and constant must agree, and every C entry must have a Rust counterpart.
#![cfg(mt_layout_table)]
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "reads a C array through raw pointers"
)]

use maptrace_abi::raw::*;
use std::collections::BTreeMap;
use std::ffi::{CStr, c_char};
use std::mem::{align_of, offset_of, size_of};

#[repr(C)]
struct Entry {
    name: *const c_char,
    value: u64,
}

unsafe extern "C" {
    static mt_abi_layout_table: [Entry; 0];
    static mt_abi_layout_table_len: usize;
}

fn c_table() -> BTreeMap<String, u64> {
    // SAFETY: the C file defines the array with mt_abi_layout_table_len
    // entries, each name a NUL-terminated string literal.
    unsafe {
        let base = std::ptr::addr_of!(mt_abi_layout_table).cast::<Entry>();
        (0..mt_abi_layout_table_len)
            .map(|i| {
                let e = &*base.add(i);
                (
                    CStr::from_ptr(e.name).to_string_lossy().into_owned(),
                    e.value,
                )
            })
            .collect()
    }
}

macro_rules! size {
    ($m:ident, $t:ident) => {
        $m.insert(
            concat!("sizeof ", stringify!($t)).to_string(),
            size_of::<$t>() as u64,
        );
    };
}
macro_rules! align {
    ($m:ident, $t:ident) => {
        $m.insert(
            concat!("alignof ", stringify!($t)).to_string(),
            align_of::<$t>() as u64,
        );
    };
}
macro_rules! off { ($m:ident, $t:ident, $($f:ident),+) => { $( $m.insert(concat!(stringify!($t), ".", stringify!($f)).to_string(), offset_of!($t, $f) as u64); )+ } }
macro_rules! konst { ($m:ident, $($c:ident),+) => { $( $m.insert(stringify!($c).to_string(), $c as u64); )+ } }

fn rust_table() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    size!(m, mt_rec_header);
    align!(m, mt_rec_header);
    off!(
        m,
        mt_rec_header,
        stamp,
        drops_before,
        kind,
        nslots,
        flags,
        error,
        pid,
        timestamp_ns,
        tid,
        vnode_id
    );
    size!(m, mt_counts);
    off!(m, mt_counts, usecount, kusecount, iocount);
    size!(m, mt_rec_mmap);
    off!(m, mt_rec_mmap, fflags, vid, duration_ns, counts);
    size!(m, mt_rec_pagein);
    off!(
        m,
        mt_rec_pagein,
        f_offset,
        size,
        duration_ns,
        counts,
        upl_flags
    );
    size!(m, mt_rec_mnomap);
    off!(m, mt_rec_mnomap, vid, duration_ns, counts);
    size!(m, mt_rec_file_mmap);
    off!(m, mt_rec_file_mmap, file_pos, prot, maxprot, mmap_flags);
    size!(m, mt_rec_path);
    off!(m, mt_rec_path, vid, path_len, path);
    size!(m, mt_rec_cont);
    off!(m, mt_rec_cont, marker, data);
    size!(m, mt_rec_mark);
    off!(m, mt_rec_mark, mark, arg0, arg1, arg2);
    size!(m, mt_rec_proc);
    off!(m, mt_rec_proc, name);
    size!(m, mt_rec_open);
    off!(m, mt_rec_open, vid, fmode, counts);
    size!(m, mt_rec_close);
    off!(m, mt_rec_close, vid, fflag, duration_ns, counts);
    size!(m, mt_batch_header);
    align!(m, mt_batch_header);
    off!(
        m,
        mt_batch_header,
        magic,
        abi_version,
        header_size,
        flags,
        nsegments,
        batch_no,
        generation,
        total_bytes,
        total_records,
        total_dropped,
        drain_ns
    );
    size!(m, mt_segment_header);
    off!(
        m,
        mt_segment_header,
        magic,
        shard,
        nslots,
        nrecords,
        first_pos,
        dropped_cumulative,
        backlog_after,
        ts_min,
        ts_max
    );
    size!(m, mt_config);
    off!(
        m, mt_config, version, size, flags, event_mask, pid, reserved
    );
    size!(m, mt_stats_header);
    off!(
        m,
        mt_stats_header,
        nshards,
        probe_method,
        generation,
        hook_calls,
        hooks_in_flight,
        errors
    );
    size!(m, mt_shard_stats);
    off!(
        m,
        mt_shard_stats,
        produced_slots,
        dropped,
        drained_slots,
        drained_records,
        backlog_slots
    );
    konst!(
        m,
        MT_ABI_VERSION,
        MT_SLOT_SIZE,
        MT_STAMP_MASK,
        MT_STAMP_CONT,
        MT_RECORD_MAX_SLOTS,
        MT_PATH_MAX,
        MT_KIND__COUNT
    );
    konst!(
        m,
        MT_BATCH_MAGIC,
        MT_SEGMENT_MAGIC,
        MT_STATS_MAGIC,
        MT_EVMASK_ALL,
        MT_RF_ALL,
        MT_CF_ALL,
        MT_CONFIG_VERSION
    );
    m
}

#[test]
fn c_and_rust_agree_on_every_entry() {
    let c = c_table();
    let r = rust_table();
    assert!(
        c.len() > 100,
        "the C table is populated ({} entries)",
        c.len()
    );
    let mismatches: Vec<_> = c
        .iter()
        .filter(|(k, v)| r.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: C {v}, Rust {:?}", r.get(k)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
    let missing: Vec<_> = r.keys().filter(|k| !c.contains_key(*k)).collect();
    assert!(missing.is_empty(), "entries only Rust checks: {missing:?}");
}
