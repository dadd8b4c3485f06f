//! Where batches come from: one trait over the kext's sysctl, the simulator
//! and recordings, so every command works the same on each.

use crate::pagesize::PageSize;
use maptrace_abi::raw;
use std::time::Duration;

/// What [`Source::next_batch`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// A batch of this many bytes is at the start of the buffer.
    Batch(usize),
    /// A part of the source failed its check and was skipped (a recording's
    /// frame whose checksum does not match); the message says where.
    Corrupt(String),
    /// Nothing right now; a live source may have more later.
    Idle,
    /// The source is finished (end of a recording, end of a workload).
    End,
}

/// Why a source failed. The messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `kern.maptrace.*` does not exist.
    #[error(
        "the maptrace kext is not loaded (sysctl {name} does not exist); \
         load it with `sudo kmutil load -p /Library/Extensions/maptrace.kext` (the first load \
         of a build asks you to allow it in System Settings and restart: README, \
         \"Use it on your Mac\"), or try `maptrace demo` to see the simulator"
    )]
    KextNotLoaded {
        /// The sysctl that was missing.
        name: String,
    },
    /// The read or write needs root.
    #[error(
        "not root: {name} can only be {what} by root, like every kern.maptrace sysctl; \
         run maptrace as root (`sudo maptrace ...`)"
    )]
    NotRoot {
        /// The sysctl.
        name: String,
        /// "read" or "written".
        what: &'static str,
    },
    /// The kext speaks another major ABI version.
    #[error(
        "ABI mismatch: the loaded kext speaks {0}; \
         use the maptrace binary built with that kext, or load the kext that came with this one"
    )]
    AbiMismatch(maptrace_abi::AbiMismatch),
    /// The kext refused a config write.
    #[error("the kext refused the config (EINVAL): {0}")]
    ConfigRefused(String),
    /// A sysctl failed in another way.
    #[error("sysctl {name} failed: {detail}")]
    Sysctl {
        /// The sysctl.
        name: String,
        /// What happened.
        detail: String,
    },
    /// The source does not offer this.
    #[error("{0}")]
    Unsupported(String),
    /// A recording is unreadable.
    #[error(transparent)]
    Recording(#[from] crate::recording::RecordingError),
}

/// A producer of raw batches exactly as `kern.maptrace.events` returns them.
pub trait Source {
    /// A short name for messages ("sysctl", "sim", "file x.mtr").
    fn describe(&self) -> String;

    /// Whether the source produces events as they happen (poll it until
    /// stopped) rather than replaying them.
    fn is_live(&self) -> bool;

    /// The pair of clock readings that maps the records' times (the kext's
    /// clock) to UTC: a live source takes it when opened, a recording has
    /// it in its header (format 4 on). `None`: no wall-clock times.
    fn anchor(&self) -> Option<crate::wallclock::Anchor> {
        None
    }

    /// The VM page size of the machine traced, in which page-ins' distinct
    /// pages are counted: a live source's machine's, or the one a
    /// recording's header keeps (format 5 on). `Err` says why it is not
    /// known.
    fn page_size(&self) -> Result<PageSize, String> {
        Err(format!("{} does not say", self.describe()))
    }

    /// Reads the next batch into `buf` (resized as needed).
    fn next_batch(&mut self, buf: &mut Vec<u8>) -> Result<Next, SourceError>;

    /// The reader stops (its time is up, or Ctrl-C): a source that runs a
    /// workload stops it, so what follows (the final drain, the closing
    /// statistics) does not wait for the workload's natural end.
    fn stop(&mut self) {}

    /// How far a source with a known end is: (bytes read, bytes in all),
    /// for a progress bar. `None` for a live source.
    fn progress(&self) -> Option<(u64, u64)> {
        None
    }

    /// How long to wait after [`Next::Idle`].
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(5)
    }

    /// The raw `kern.maptrace.stats` bytes.
    fn stats(&mut self) -> Result<Vec<u8>, SourceError> {
        Err(SourceError::Unsupported(format!(
            "{} has no kext statistics; use --source sysctl (macOS) or --source sim",
            self.describe()
        )))
    }

    /// The kext's statistics after the last batch read, when the source has
    /// them: drops after a shard's last record read are only counted there.
    /// A live source reads them now; a recording has them as its last frame.
    fn final_stats(&mut self) -> Option<Vec<u8>> {
        if self.is_live() {
            self.stats().ok()
        } else {
            None
        }
    }

    /// Where a recording ended inside a frame (known once the source ended):
    /// what a replay could not read.
    fn cut(&self) -> Option<crate::recording::Cut> {
        None
    }

    /// The kext's current config.
    fn config(&mut self) -> Result<raw::mt_config, SourceError> {
        Err(SourceError::Unsupported(format!(
            "{} has no kext config; use --source sysctl (macOS) or --source sim",
            self.describe()
        )))
    }

    /// Whether a config written here outlives this process (the kext's
    /// does; a simulator booted for one command does not).
    fn config_persists(&self) -> bool {
        true
    }

    /// Writes a new config.
    fn set_config(&mut self, _cfg: &raw::mt_config) -> Result<(), SourceError> {
        Err(SourceError::Unsupported(format!(
            "{} has no kext config to change; use --source sysctl (macOS) or --source sim",
            self.describe()
        )))
    }
}
