//! maptrace-core: the `no_std` heart of the maptrace kext.
//!
//! The C shim (`kext-shim/`) owns every function pointer the kernel calls and
//! calls into this crate directly through the `mt_core_*` exports
//! (`kext-shim/include/maptrace_bridge.h`). Here: the per-CPU event ring, record
//! encoding, filters, keyed vnode ids, the table of hooked vnode-op vectors,
//! config validation and the batch drain read by `kern.maptrace.events`.
//!
//! `unsafe` is allowed in exactly two modules, listed below: `ring` (the slots
//! shared between producers and the reader) and `ffi` (raw pointers from C).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![forbid(clippy::multiple_unsafe_ops_per_block)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod config;
pub mod engine;
#[allow(unsafe_code)]
pub mod ffi;
pub mod id_memo;
pub mod procs;
pub mod record;
#[allow(unsafe_code)]
pub mod ring;
mod sync;
pub mod vectors;
pub mod vnode_id;

pub use engine::{DrainError, Engine, Params, RecordResult, ShimCounters};
/// What a hook saw (`struct mt_event`): the core's input, before encoding.
pub use ffi::bridge::mt_event as HookEvent;
pub use ring::Ring;
