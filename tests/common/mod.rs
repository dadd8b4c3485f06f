//! Helpers shared by the core's integration tests: an engine over owned
//! memory, event builders, and a drain-and-decode loop.
#![allow(dead_code, reason = "each test file uses a different subset")]

use maptrace_abi::decode::{DecodeError, Decoder, Record};
use maptrace_abi::raw;
use maptrace_core::ring::RingStart;
use maptrace_core::{Engine, HookEvent, Params, Ring};
use std::mem::MaybeUninit;

/// Memory for an engine's ring.
pub struct Mem(Vec<MaybeUninit<u8>>);

impl Mem {
    pub fn new(nshards: u32, cap: u32) -> Mem {
        Mem(vec![
            MaybeUninit::uninit();
            Ring::mem_size(nshards, cap).unwrap()
        ])
    }

    /// The raw memory, for a bare `Ring`.
    pub fn bytes(&mut self) -> &mut [MaybeUninit<u8>] {
        &mut self.0
    }

    pub fn engine(&mut self, nshards: u32, cap: u32) -> Engine<'_> {
        self.engine_at(nshards, cap, RingStart::default())
    }

    /// An engine whose shards start at `start` (near a wrap).
    pub fn engine_at(&mut self, nshards: u32, cap: u32, start: RingStart) -> Engine<'_> {
        let ring = Ring::init_at(&mut self.0, nshards, cap, start).unwrap();
        Engine::new(
            ring,
            Params {
                hash_key: [7, 11],
                generation: 0x6e6e,
                probe_method: raw::MT_PROBE_OFFSET,
                start_ns: 0,
            },
        )
    }
}

/// A PAGEIN event whose offset carries `seq`, so order can be checked.
pub fn pagein(pid: u32, tid: u64, seq: u64) -> HookEvent {
    HookEvent {
        kind: raw::MT_KIND_PAGEIN,
        pid,
        tid,
        timestamp_ns: seq,
        duration_ns: 1000,
        vnode_ptr: 0xffff_ff80_0000_1000 + tid * 0x100,
        vid: 1,
        error: 0,
        offset: seq as i64,
        size: 4096,
        usecount: 2,
        kusecount: 0,
        iocount: 1,
        count_method: raw::MT_PROBE_OFFSET,
        prot: 0,
        maxprot: 0,
        flags: 0,
        reserved0: 0,
    }
}

/// An event of another kind, otherwise like `pagein`.
pub fn event(kind: u32, pid: u32, seq: u64) -> HookEvent {
    HookEvent {
        kind,
        ..pagein(pid, 1, seq)
    }
}

/// Drains everything committed (several batches if needed) through a buffer
/// of `buf_len` bytes, decoding as it goes; returns records and errors.
pub fn drain_all(
    e: &Engine<'_>,
    dec: &mut Decoder,
    buf_len: usize,
) -> (Vec<Record>, Vec<DecodeError>) {
    let mut buf = vec![0u8; buf_len];
    let (mut recs, mut errs) = (Vec::new(), Vec::new());
    loop {
        let n = e.drain_prepare(&mut buf, 0).unwrap();
        if n == 0 {
            return (recs, errs);
        }
        e.drain_commit();
        let (_, items) = dec.decode(&buf[..n]).unwrap();
        for it in items {
            match it {
                Ok(r) => recs.push(r),
                Err(x) => errs.push(x),
            }
        }
    }
}

/// Records that are not START/CONFIG/VECTOR markers.
pub fn events(recs: &[Record]) -> Vec<&Record> {
    recs.iter()
        .filter(|r| r.kind != maptrace_abi::EventKind::Mark)
        .collect()
}

/// Proptest settings for `cases` cases; under Miri a few cases (it checks the
/// unsafe accesses, not the search's reach) and no regression files (Miri
/// isolates the test from the filesystem).
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    if cfg!(miri) {
        proptest::test_runner::Config {
            cases: 3,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        }
    } else {
        proptest::test_runner::Config {
            cases,
            ..proptest::test_runner::Config::default()
        }
    }
}
