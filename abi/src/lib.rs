//! The maptrace ABI shared by the kext core and the companion: the types
//! generated from `kext-shim/include/maptrace_abi.h`, their layout pins, typed
//! views of kinds and flags, and (feature `decode`) the batch decoder with its
//! shard merge.
//!
//! Nothing here is hand-mirrored: every struct comes from the header through
//! bindgen (`raw`), and `layout` pins the same numbers the header's
//! `_Static_assert`s pin. The crate has no `unsafe` at all.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "decode")]
extern crate alloc;

pub mod raw;

mod layout;

pub mod kind;
pub use kind::{ConfigFlags, EventKind, EventMask, Mark, ProbeMethod, RecordFlags};

#[cfg(feature = "decode")]
pub mod decode;
#[cfg(feature = "decode")]
pub mod merge;
#[cfg(feature = "decode")]
pub use decode::{
    Batch, BatchError, Counts, DecodeError, Decoder, Event, Losses, Record, RecordError, Segment,
};
