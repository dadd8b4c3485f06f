//! The maptrace ABI shared by the kext core and the companion: the types
//! generated from `kext-shim/include/maptrace_abi.h`, their layout pins, typed
//! views of kinds and flags, the version rule, config validation, the stats
//! parser, raw-slot offsets and (feature `decode`) the batch decoder with its
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

pub mod config;
pub mod kind;
pub mod stats;
pub mod version;
pub mod wire;
pub use config::{Config, ConfigError};
pub use kind::{ConfigFlags, EventKind, EventMask, Mark, ProbeMethod, RecordFlags};
pub use stats::{StatsError, StatsView};
pub use version::{AbiMismatch, AbiVersion};

#[cfg(feature = "decode")]
pub mod decode;
#[cfg(feature = "decode")]
pub mod merge;
#[cfg(feature = "decode")]
pub use decode::{
    Batch, BatchError, Counts, DecodeError, Decoded, Decoder, Event, HeaderTally, KextDrops, Loss,
    Losses, Notice, Record, RecordError, RecordView, Segment,
};
