//! Compile-time pins of the ABI layout: the same numbers the header's
//! `_Static_assert`s pin, checked against the bindgen-generated types. A
//! mismatch fails the build on both sides of the ABI.

use crate::raw;
use core::mem::{align_of, offset_of, size_of};
use static_assertions::const_assert_eq;

const_assert_eq!(size_of::<raw::mt_rec_header>(), 40);
const_assert_eq!(offset_of!(raw::mt_rec_header, drops_before), 4);
const_assert_eq!(offset_of!(raw::mt_rec_header, kind), 8);
const_assert_eq!(offset_of!(raw::mt_rec_header, pid), 12);
const_assert_eq!(offset_of!(raw::mt_rec_header, timestamp_ns), 16);
const_assert_eq!(offset_of!(raw::mt_rec_header, tid), 24);
const_assert_eq!(offset_of!(raw::mt_rec_header, vnode_id), 32);
const_assert_eq!(size_of::<raw::mt_counts>(), 6);
const_assert_eq!(size_of::<raw::mt_rec_mmap>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(offset_of!(raw::mt_rec_mmap, counts), 52);
const_assert_eq!(size_of::<raw::mt_rec_pagein>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(offset_of!(raw::mt_rec_pagein, f_offset), 40);
const_assert_eq!(offset_of!(raw::mt_rec_pagein, counts), 56);
const_assert_eq!(size_of::<raw::mt_rec_mnomap>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(
    size_of::<raw::mt_rec_file_mmap>(),
    raw::MT_SLOT_SIZE as usize
);
const_assert_eq!(size_of::<raw::mt_rec_path>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(
    offset_of!(raw::mt_rec_path, path),
    (raw::MT_SLOT_SIZE - raw::MT_PATH_HEAD_BYTES) as usize
);
const_assert_eq!(size_of::<raw::mt_rec_cont>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(size_of::<raw::mt_rec_mark>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(size_of::<raw::mt_rec_proc>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(size_of::<raw::mt_rec_open>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(size_of::<raw::mt_rec_close>(), raw::MT_SLOT_SIZE as usize);
const_assert_eq!(size_of::<raw::mt_batch_header>(), 64);
const_assert_eq!(align_of::<raw::mt_batch_header>(), 8);
const_assert_eq!(size_of::<raw::mt_segment_header>(), 64);
const_assert_eq!(size_of::<raw::mt_config>(), 32);
const_assert_eq!(size_of::<raw::mt_stats_header>(), 80);
const_assert_eq!(size_of::<raw::mt_shard_stats>(), 64);
