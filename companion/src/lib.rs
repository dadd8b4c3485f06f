//! The `maptrace` companion as a library: sources of raw batches, the decode
//! pipeline and every output the binary offers, so tests and benchmarks drive
//! the same code the command line runs.

pub mod contract;
pub mod control;
pub mod csv_rows;
pub mod heatmap;
pub mod json;
pub mod output;
pub mod pagesize;
pub mod palette;
pub mod perfetto;
pub mod pipeline;
#[cfg(feature = "png")]
pub mod raster;
pub mod recording;
pub mod replay;
pub mod report;
#[cfg(feature = "sim")]
pub mod sim;
pub mod source;
pub mod sysctl;
pub mod text;
pub mod wallclock;

/// Exit statuses of the `maptrace` binary (documented in the README).
pub mod exit {
    /// Everything was read and nothing was lost.
    pub const OK: u8 = 0;
    /// The command failed (bad file, source unavailable, refused value).
    pub const ERROR: u8 = 1;
    /// The command line was wrong: clap's own status for what it parses,
    /// and the commands' for what they check themselves ([`UsageError`]).
    pub const USAGE: u8 = 2;
    /// The command finished but records were dropped or skipped.
    pub const LOSS: u8 = 3;
    /// The command finished but part of the stream was corrupt.
    pub const CORRUPT: u8 = 4;
    /// `report --fail-on-suspects` listed leak suspects (and nothing was
    /// lost or corrupt: those statuses come first, since lost records can
    /// make a suspect).
    pub const SUSPECTS: u8 = 5;

    /// A command line that parsed but does not make sense (an unknown
    /// source, options that exclude each other, nothing to do): the
    /// binary exits with [`USAGE`], as for clap's own errors.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct UsageError(pub String);

    /// A [`UsageError`] as the commands return errors.
    pub fn usage(msg: impl Into<String>) -> anyhow::Error {
        UsageError(msg.into()).into()
    }
}
