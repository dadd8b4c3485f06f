//! `struct mt_config`: the one definition of a valid config, used by the
//! kext core when a config is written and by the companion before it writes
//! one. No allocation, no std.

use crate::kind::{ConfigFlags, EventKind, EventMask};
use crate::raw;
use core::fmt;
use core::mem::size_of;
use zerocopy::FromBytes;

/// Why a config is not valid.
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
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::Size => "size is not sizeof(struct mt_config)",
            ConfigError::Version => "version is not MT_CONFIG_VERSION",
            ConfigError::Flags => "unknown flags, or both pid filters at once",
            ConfigError::Mask => "unknown event-mask bits",
            ConfigError::Reserved => "a reserved word is not zero",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

/// A valid configuration.
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
    /// Recording everything: the kext's state after start.
    pub const DEFAULT: Config = Config {
        flags: ConfigFlags::ENABLE,
        mask: EventMask::all(),
        pid: 0,
    };

    /// Parses and validates the bytes of a `struct mt_config` write.
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let c = raw::mt_config::read_from_bytes(bytes).map_err(|_| ConfigError::Size)?;
        Config::from_raw(&c)
    }

    /// Validates a `struct mt_config`.
    pub fn from_raw(c: &raw::mt_config) -> Result<Config, ConfigError> {
        if usize::from(c.size) != size_of::<raw::mt_config>() {
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
    pub const fn to_raw(self) -> raw::mt_config {
        raw::mt_config {
            version: raw::MT_CONFIG_VERSION as u16,
            size: size_of::<raw::mt_config>() as u16,
            flags: self.flags.bits(),
            event_mask: self.mask.bits(),
            pid: self.pid,
            reserved: [0; 4],
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

    /// Whether markers (MARK records) pass this config. They describe the
    /// tracer — a config write, a hooked vector — not a process, so the pid
    /// filters do not apply: the CONFIG marker of a pid filter survives it.
    #[inline]
    pub fn wants_marks(self) -> bool {
        self.flags.contains(ConfigFlags::ENABLE) && self.mask.contains(EventMask::MARK)
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
        assert_eq!(Config::from_raw(&c.to_raw()), Ok(c));
    }

    #[test]
    fn every_malformed_config_is_refused() {
        let good = Config::DEFAULT.to_raw();
        assert_eq!(Config::parse(&bytes(good)[..31]), Err(ConfigError::Size));
        assert_eq!(Config::parse(&[0u8; 33]), Err(ConfigError::Size));
        let refused = |c: raw::mt_config| Config::parse(&bytes(c)).unwrap_err();
        assert_eq!(
            refused(raw::mt_config { size: 28, ..good }),
            ConfigError::Size
        );
        assert_eq!(
            refused(raw::mt_config { version: 2, ..good }),
            ConfigError::Version
        );
        assert_eq!(
            refused(raw::mt_config { flags: 0x8, ..good }),
            ConfigError::Flags
        );
        let both = raw::MT_CF_PID_FILTER | raw::MT_CF_PID_EXCLUDE;
        assert_eq!(
            refused(raw::mt_config {
                flags: both,
                ..good
            }),
            ConfigError::Flags
        );
        // Bit 0 is no kind; bit 7 is past the last.
        for event_mask in [1, 0x400, raw::MT_EVMASK_ALL | 1] {
            assert_eq!(
                refused(raw::mt_config { event_mask, ..good }),
                ConfigError::Mask,
                "{event_mask:#x}"
            );
        }
        assert_eq!(
            refused(raw::mt_config {
                reserved: [0, 0, 1, 0],
                ..good
            }),
            ConfigError::Reserved
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
}
