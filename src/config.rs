//! The live recording configuration. What a valid `struct mt_config` is and
//! the hot-path filter are the ABI's (`maptrace_abi::config`).
//!
//! The whole config lives in one atomic word, so a hook reads it with a single
//! relaxed load and can never see half of a config change.

use crate::sync::{AtomicU64, Ordering};
use maptrace_abi::{ConfigFlags, EventMask};

pub use maptrace_abi::Config;

/// Why a config write was refused (the config is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not a valid `struct mt_config` (the ABI's rules).
    Invalid(maptrace_abi::ConfigError),
    /// The core is shut down.
    ShutDown,
}

impl From<maptrace_abi::ConfigError> for ConfigError {
    fn from(e: maptrace_abi::ConfigError) -> ConfigError {
        ConfigError::Invalid(e)
    }
}

/// Packs into the atomic word: pid in bits 0..32, mask in 32..48 (ten kinds
/// since ABI 1.2), flags in 48..56.
const fn pack(c: Config) -> u64 {
    c.pid as u64 | (c.mask.bits() as u64) << 32 | (c.flags.bits() as u64) << 48
}

const fn unpack(w: u64) -> Config {
    Config {
        flags: ConfigFlags::from_bits_truncate((w >> 48) as u32 & 0xff),
        mask: EventMask::from_bits_truncate((w >> 32) as u32 & 0xffff),
        pid: w as u32,
    }
}

/// Bit 63 of the word: shut down; no write can enable recording again.
const SHUTDOWN: u64 = 1 << 63;

/// The live config, one atomic word.
pub struct ConfigCell(AtomicU64);

impl ConfigCell {
    /// Starts with `config`.
    pub fn new(config: Config) -> ConfigCell {
        ConfigCell(AtomicU64::new(pack(config)))
    }

    /// The current config (a shut-down core reports recording disabled).
    #[inline]
    pub fn get(&self) -> Config {
        let w = self.0.load(Ordering::Relaxed);
        let mut c = unpack(w);
        if w & SHUTDOWN != 0 {
            c.flags.remove(ConfigFlags::ENABLE);
        }
        c
    }

    /// Installs `config` unless the core is shut down.
    pub fn set(&self, config: Config) -> Result<(), ConfigError> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur & SHUTDOWN != 0 {
                return Err(ConfigError::ShutDown);
            }
            match self.0.compare_exchange_weak(
                cur,
                pack(config),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Stops recording for good.
    pub fn shut_down(&self) {
        self.0.fetch_or(SHUTDOWN, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maptrace_abi::EventKind;

    #[test]
    fn pack_round_trips_every_field() {
        let c = Config {
            flags: ConfigFlags::ENABLE | ConfigFlags::PID_EXCLUDE,
            mask: EventMask::PAGEIN | EventMask::MARK,
            pid: u32::MAX,
        };
        assert_eq!(unpack(pack(c)), c);
        let cell = ConfigCell::new(Config::DEFAULT);
        assert_eq!(cell.set(c), Ok(()));
        assert_eq!(cell.get(), c);
    }

    #[test]
    fn shut_down_is_final() {
        let cell = ConfigCell::new(Config::DEFAULT);
        cell.shut_down();
        assert!(!cell.get().wants(EventKind::Mmap, 1));
        assert_eq!(cell.set(Config::DEFAULT), Err(ConfigError::ShutDown));
        assert!(!cell.get().flags.contains(ConfigFlags::ENABLE));
    }
}
