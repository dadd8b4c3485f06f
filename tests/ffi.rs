//! The `mt_core_*` C exports called the way the shim calls them, including
//! every NULL, undersized and malformed argument the shim could pass: none
//! may crash, each gets its documented result.
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "tests of the raw C API: every call in a sequence is unsafe"
)]

use maptrace_abi::raw;
use maptrace_core::ffi::bridge::{
    self, MT_EINVAL, MT_ENOMEM, MT_ENOSPC, MT_OK, mt_core_params, mt_shim_counters,
};
use maptrace_core::ffi::*;
use std::ptr::{null, null_mut};

fn params(nshards: u32, slots: u32) -> mt_core_params {
    mt_core_params {
        nshards,
        slots_per_shard: slots,
        hash_key: [1, 2],
        generation: 9,
        probe_method: raw::MT_PROBE_ISINUSE,
        reserved0: 0,
        start_ns: 1,
    }
}

#[test]
fn invalid_params_and_memory_are_refused() {
    // SAFETY: (whole test) every pointer passed is NULL or valid for the
    // stated length, as the bridge contract requires.
    unsafe {
        assert_eq!(mt_core_mem_size(null()), 0);
        assert_eq!(mt_core_mem_size(&params(0, 64)), 0);
        assert_eq!(mt_core_mem_size(&params(1, 100)), 0, "not a power of two");
        assert_eq!(mt_core_mem_size(&params(1, 32)), 0, "below the minimum");
        assert_eq!(mt_core_mem_size(&params(257, 64)), 0);
        let need = mt_core_mem_size(&params(2, 64));
        assert!(need > 2 * 64 * 64);
        let mut mem = vec![0u8; need];
        // mem_size covers the worst alignment; 255 bytes less never suffices.
        assert!(mt_core_init(mem.as_mut_ptr().cast(), need - 255, &params(2, 64)).is_null());
        assert!(mt_core_init(null_mut(), need, &params(2, 64)).is_null());
        assert!(mt_core_init(mem.as_mut_ptr().cast(), need, null()).is_null());
        // Any alignment of the memory works.
        let mut odd = vec![0u8; need + 1];
        assert!(!mt_core_init(odd.as_mut_ptr().add(1).cast(), need, &params(2, 64)).is_null());
    }
}

#[test]
fn null_handles_are_harmless() {
    // SAFETY: (whole test) NULL handles are part of the contract.
    unsafe {
        assert_eq!(mt_core_wants(null(), raw::MT_KIND_MMAP, 1), 0);
        assert_eq!(
            mt_core_record(null(), 0, null()),
            bridge::MT_FILTERED as i32
        );
        assert_eq!(mt_core_vector_original(null(), 1, 0), 0);
        assert_eq!(mt_core_vector_count(null()), 0);
        assert_eq!(mt_core_vector_remove(null(), 1), MT_EINVAL as i32);
        assert_eq!(mt_core_drain_capacity(null()), 0);
        assert_eq!(mt_core_config_set(null(), null(), 0, 0), MT_EINVAL as i32);
        mt_core_drain_commit(null());
        mt_core_drain_abort(null());
        mt_core_shutdown(null_mut());
    }
}

#[test]
fn the_shim_call_sequence_works_through_c_types() {
    // SAFETY: (whole test) pointers come from live Rust values with the
    // lengths passed alongside them.
    unsafe {
        let p = params(2, 64);
        let need = mt_core_mem_size(&p);
        let mut mem = vec![0u8; need];
        let core = mt_core_init(mem.as_mut_ptr().cast(), need, &p);
        assert!(!core.is_null());

        // Vector table: insert, duplicate, lookup, get, bad op.
        let origs = [0x10u64, 0x20, 0x30, 0x40];
        assert_eq!(
            mt_core_vector_insert(core, 0xabc0, origs.as_ptr(), 5),
            MT_OK as i32
        );
        assert_eq!(
            mt_core_vector_insert(core, 0xabc0, origs.as_ptr(), 5),
            MT_EINVAL as i32
        );
        assert_eq!(
            mt_core_vector_insert(core, 0xabd0, null(), 5),
            MT_EINVAL as i32
        );
        assert_eq!(mt_core_vector_original(core, 0xabc0, 1), 0x20);
        assert_eq!(mt_core_vector_original(core, 0xabc0, 3), 0x40);
        assert_eq!(mt_core_vector_original(core, 0xabc0, 4), 0);
        let (mut v, mut o) = (0u64, [0u64; 4]);
        assert_eq!(
            mt_core_vector_get(core, 0, &mut v, o.as_mut_ptr()),
            MT_OK as i32
        );
        assert_eq!((v, o), (0xabc0, origs));
        assert_eq!(
            mt_core_vector_get(core, 1, &mut v, o.as_mut_ptr()),
            MT_EINVAL as i32
        );
        // Remove: lookups miss; the address with the same originals revives
        // its slot, with other originals it is a new entry.
        assert_eq!(mt_core_vector_remove(core, 0xabc0), MT_OK as i32);
        assert_eq!(mt_core_vector_remove(core, 0xabc0), MT_EINVAL as i32);
        assert_eq!(mt_core_vector_original(core, 0xabc0, 1), 0);
        assert_eq!(
            mt_core_vector_insert(core, 0xabc0, origs.as_ptr(), 5),
            MT_OK as i32
        );
        assert_eq!(mt_core_vector_count(core), 1, "revived");
        assert_eq!(mt_core_vector_original(core, 0xabc0, 1), 0x20);
        assert_eq!(mt_core_vector_remove(core, 0xabc0), MT_OK as i32);
        let other = [0x11u64, 0x21, 0x31, 0x41];
        assert_eq!(
            mt_core_vector_insert(core, 0xabc0, other.as_ptr(), 5),
            MT_OK as i32
        );
        assert_eq!(mt_core_vector_count(core), 2);
        assert_eq!(mt_core_vector_original(core, 0xabc0, 1), 0x21);
        for i in 2..64u64 {
            mt_core_vector_insert(core, 0x1_0000 + i * 16, origs.as_ptr(), 5);
        }
        assert_eq!(
            mt_core_vector_insert(core, 0x9_0000, origs.as_ptr(), 5),
            MT_ENOSPC as i32
        );

        // Config: a short write is refused and changes nothing.
        let mut c = std::mem::zeroed::<raw::mt_config>();
        mt_core_config_get(core, &mut c);
        assert_eq!(c.flags, raw::MT_CF_ENABLE);
        assert_eq!(
            mt_core_config_set(core, (&raw const c).cast(), 31, 6),
            MT_EINVAL as i32
        );
        let mut off = c;
        off.flags = 0;
        assert_eq!(
            mt_core_config_set(core, (&raw const off).cast(), 32, 6),
            MT_OK as i32
        );
        assert_eq!(mt_core_wants(core, raw::MT_KIND_MMAP, 1), 0);
        assert_eq!(
            mt_core_config_set(core, (&raw const c).cast(), 32, 6),
            MT_OK as i32
        );
        assert_eq!(mt_core_wants(core, raw::MT_KIND_MMAP, 1), 1);

        // Record, including a path given as (NULL, 0). Shard 0 is full of
        // the 64 VECTOR_PATCHED markers above, so use shard 1.
        let ev = maptrace_core::HookEvent {
            kind: raw::MT_KIND_MMAP,
            vnode_ptr: 0xffff_ff80_0000_4000,
            ..std::mem::zeroed()
        };
        assert_eq!(mt_core_record(core, 7, &ev), bridge::MT_RECORDED as i32);
        assert_eq!(mt_core_record(core, 7, null()), bridge::MT_REJECTED as i32);
        assert_eq!(
            mt_core_record_path(core, 1, &ev, null(), 0),
            bridge::MT_RECORDED as i32
        );
        assert_eq!(
            mt_core_record(core, 0, &ev),
            bridge::MT_DROPPED as i32,
            "markers count against the ring like records"
        );

        // Drain: too small, then a real batch.
        let mut small = [0u8; 64];
        let mut len = 123usize;
        assert_eq!(
            mt_core_drain_prepare(core, small.as_mut_ptr().cast(), 64, 0, &mut len),
            MT_ENOMEM as i32
        );
        assert_eq!(len, 0);
        let cap = mt_core_drain_capacity(core);
        let mut buf = vec![0u8; cap];
        assert_eq!(
            mt_core_drain_prepare(core, buf.as_mut_ptr().cast(), cap, 0, &mut len),
            MT_OK as i32
        );
        assert!(len > 64);
        mt_core_drain_commit(core);
        let mut dec = maptrace_abi::Decoder::new();
        let (_, items) = dec.decode(&buf[..len]).unwrap();
        assert!(items.iter().all(Result::is_ok));
        let kinds: Vec<_> = items.iter().map(|r| r.as_ref().unwrap().kind).collect();
        assert!(kinds.contains(&maptrace_abi::EventKind::Mmap));
        assert!(kinds.contains(&maptrace_abi::EventKind::Path));
        assert!(
            !buf[..len]
                .windows(8)
                .any(|w| w == ev.vnode_ptr.to_le_bytes()),
            "no kernel address leaves"
        );

        // Stats: too small, then right.
        let size = mt_core_stats_size(core);
        let mut s = vec![0u8; size];
        let shim = mt_shim_counters {
            hook_calls: 3,
            hooks_in_flight: 0,
            errors: 1,
            paths_skipped: 4,
        };
        assert_eq!(
            mt_core_stats(core, &shim, s.as_mut_ptr().cast(), size - 1),
            MT_ENOMEM as i32
        );
        assert_eq!(
            mt_core_stats(core, &shim, s.as_mut_ptr().cast(), size),
            MT_OK as i32
        );
        assert_eq!(
            u32::from_le_bytes(s[16..20].try_into().unwrap()),
            raw::MT_PROBE_ISINUSE
        );

        mt_core_shutdown(core);
        assert_eq!(mt_core_record(core, 0, &ev), bridge::MT_FILTERED as i32);
    }
}
