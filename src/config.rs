//! The recording configuration: validation of `struct mt_config` writes and
//! the hot-path filter.
//!
//! The whole config lives in one atomic word, so a hook reads it with a single
//! relaxed load and can never see half of a config change.

use crate::sync::{AtomicU64, Ordering};
use maptrace_abi::{ConfigFlags, EventKind, EventMask, raw};
use zerocopy::FromBytes;

/// Why a config write was refused (the config is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not exactly `sizeof(struct mt_config)` bytes, or `size` disagrees.
    Size,
    /// `version` is not `MT_CONFIG_VERSION`.
    Version,
    /// Unknown `MT_CF_*` bits, or both pid modes at once.
    Flags,
    /// Unknown event-mask bits.
    Mask,
    /// A reserved word is not zero.
    Reserved,
    /// The core is shut down.
    ShutDown,
}

/// A validated configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `MT_CF_*`.
    pub flags: ConfigFlags,
    /// Kinds recorded.
    pub mask: EventMask,
    /// The pid of `PID_FILTER` / `PID_EXCLUDE`.
    pub pid: u32,
}

impl Config {
    /// Recording everything: the state after start.
    pub const DEFAULT: Config = Config {
        flags: ConfigFlags::ENABLE,
        mask: EventMask::all(),
        pid: 0,
    };

    /// Parses and validates the bytes of a `struct mt_config` write.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let c = raw::mt_config::read_from_bytes(bytes).map_err(|_| ConfigError::Size)?;
        if usize::from(c.size) != core::mem::size_of::<raw::mt_config>() {
            return Err(ConfigError::Size);
        }
        if u32::from(c.version) != raw::MT_CONFIG_VERSION {
            return Err(ConfigError::Version);
        }
        let flags = ConfigFlags::from_bits(c.flags).ok_or(ConfigError::Flags)?;
        if flags.contains(ConfigFlags::PID_FILTER | ConfigFlags::PID_EXCLUDE) {
            return Err(ConfigError::Flags);
        }
        let mask = EventMask::from_bits(c.event_mask).ok_or(ConfigError::Mask)?;
        if c.reserved.iter().any(|&r| r != 0) {
            return Err(ConfigError::Reserved);
        }
        Ok(Config {
            flags,
            mask,
            pid: c.pid,
        })
    }

    /// The ABI struct for this config.
    pub fn to_raw(self) -> raw::mt_config {
        raw::mt_config {
            version: raw::MT_CONFIG_VERSION as u16,
            size: core::mem::size_of::<raw::mt_config>() as u16,
            flags: self.flags.bits(),
            event_mask: self.mask.bits(),
            pid: self.pid,
            reserved: [0; 4],
        }
    }

    /// Packs into the atomic word: pid in bits 0..32, mask in 32..48 (ten
    /// kinds since ABI 1.2), flags in 48..56.
    const fn pack(self) -> u64 {
        self.pid as u64 | (self.mask.bits() as u64) << 32 | (self.flags.bits() as u64) << 48
    }

    const fn unpack(w: u64) -> Config {
        Config {
            flags: ConfigFlags::from_bits_truncate((w >> 48) as u32 & 0xff),
            mask: EventMask::from_bits_truncate((w >> 32) as u32 & 0xffff),
            pid: w as u32,
        }
    }

    /// Whether an event of `kind` from `pid` passes this config.
    #[inline]
    pub fn wants(self, kind: EventKind, pid: u32) -> bool {
        self.flags.contains(ConfigFlags::ENABLE)
            && self.mask.contains(kind.mask())
            && !(self.flags.contains(ConfigFlags::PID_FILTER) && pid != self.pid)
            && !(self.flags.contains(ConfigFlags::PID_EXCLUDE) && pid == self.pid)
    }
}

/// Bit 63 of the word: shut down; no write can enable recording again.
const SHUTDOWN: u64 = 1 << 63;

/// The live config, one atomic word.
pub struct ConfigCell(AtomicU64);

impl ConfigCell {
    /// Starts with `config`.
    pub fn new(config: Config) -> ConfigCell {
        ConfigCell(AtomicU64::new(config.pack()))
    }

    /// The current config (a shut-down core reports recording disabled).
    #[inline]
    pub fn get(&self) -> Config {
        let w = self.0.load(Ordering::Relaxed);
        let mut c = Config::unpack(w);
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
                config.pack(),
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
    use zerocopy::IntoBytes;

    fn bytes(c: raw::mt_config) -> [u8; 32] {
        let mut b = [0u8; 32];
        b.copy_from_slice(c.as_bytes());
        b
    }

    #[test]
    fn valid_config_round_trips() {
        let c = Config {
            flags: ConfigFlags::ENABLE | ConfigFlags::PID_EXCLUDE,
            mask: EventMask::PAGEIN,
            pid: 42,
        };
        assert_eq!(Config::parse(&bytes(c.to_raw())), Ok(c));
        assert_eq!(Config::unpack(c.pack()), c);
    }

    #[test]
    fn every_malformed_write_is_refused() {
        let good = Config::DEFAULT.to_raw();
        assert_eq!(Config::parse(&bytes(good)[..31]), Err(ConfigError::Size));
        assert_eq!(Config::parse(&[0u8; 33]), Err(ConfigError::Size));
        assert_eq!(
            Config::parse(&bytes(raw::mt_config { size: 28, ..good })),
            Err(ConfigError::Size)
        );
        assert_eq!(
            Config::parse(&bytes(raw::mt_config { version: 2, ..good })),
            Err(ConfigError::Version)
        );
        assert_eq!(
            Config::parse(&bytes(raw::mt_config { flags: 0x8, ..good })),
            Err(ConfigError::Flags)
        );
        let both = raw::MT_CF_PID_FILTER | raw::MT_CF_PID_EXCLUDE;
        assert_eq!(
            Config::parse(&bytes(raw::mt_config {
                flags: both,
                ..good
            })),
            Err(ConfigError::Flags)
        );
        assert_eq!(
            Config::parse(&bytes(raw::mt_config {
                event_mask: 1,
                ..good
            })),
            Err(ConfigError::Mask)
        );
        assert_eq!(
            Config::parse(&bytes(raw::mt_config {
                reserved: [0, 0, 1, 0],
                ..good
            })),
            Err(ConfigError::Reserved)
        );
    }

    #[test]
    fn filter_honours_enable_mask_and_pid_modes() {
        let all = Config::DEFAULT;
        assert!(all.wants(EventKind::Pagein, 7));
        let off = Config {
            flags: ConfigFlags::empty(),
            ..all
        };
        assert!(!off.wants(EventKind::Pagein, 7));
        let only_mmap = Config {
            mask: EventMask::MMAP,
            ..all
        };
        assert!(only_mmap.wants(EventKind::Mmap, 7) && !only_mmap.wants(EventKind::Pagein, 7));
        let only_7 = Config {
            flags: ConfigFlags::ENABLE | ConfigFlags::PID_FILTER,
            pid: 7,
            ..all
        };
        assert!(only_7.wants(EventKind::Mmap, 7) && !only_7.wants(EventKind::Mmap, 8));
        let not_7 = Config {
            flags: ConfigFlags::ENABLE | ConfigFlags::PID_EXCLUDE,
            pid: 7,
            ..all
        };
        assert!(!not_7.wants(EventKind::Mmap, 7) && not_7.wants(EventKind::Mmap, 8));
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
