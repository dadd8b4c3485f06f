//! The kext's control surface: parsing `kern.maptrace.stats`, showing and
//! changing `kern.maptrace.config`, with values checked before they are sent.

use crate::palette::Palette;
use anstyle::Style;
use maptrace_abi::{
    AbiVersion, Config, ConfigFlags, EventKind, EventMask, ProbeMethod, StatsView, raw,
};
use serde::Serialize;
use std::io::{self, Write};

/// One shard's counters.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ShardStats {
    /// Shard number.
    pub shard: u32,
    /// Slots ever reserved.
    pub produced_slots: u64,
    /// Records dropped because the shard was full.
    pub dropped: u64,
    /// Slots handed to the reader.
    pub drained_slots: u64,
    /// Records handed to the reader.
    pub drained_records: u64,
    /// Reserved, not yet drained.
    pub backlog_slots: u64,
}

/// `kern.maptrace.stats`, decoded.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// `MT_ABI_VERSION` of the kext.
    pub abi_version: u16,
    /// Random per load.
    pub generation: u64,
    /// How vnode counts are read.
    pub probe_method: &'static str,
    /// Vnode-op vectors hooked.
    pub vectors_patched: u32,
    /// Slots per shard.
    pub slots_per_shard: u32,
    /// Whether recording is on.
    pub enabled: bool,
    /// Current config flags (`MT_CF_*`).
    pub config_flags: u32,
    /// Kinds recorded.
    pub events: Vec<&'static str>,
    /// All hook invocations.
    pub hook_calls: u64,
    /// Hooks running at the time of the read.
    pub hooks_in_flight: u64,
    /// Events not recorded because of the config.
    pub filtered: u64,
    /// Fail-open paths taken.
    pub errors: u64,
    /// PATH records the kext skipped (no free path buffer; ABI 1.1, 0 before).
    pub paths_skipped: u64,
    /// Sum of the shards' drops.
    pub dropped: u64,
    /// Per shard.
    pub shards: Vec<ShardStats>,
}

pub use maptrace_abi::StatsError;

fn kind_names(mask: u32) -> Vec<&'static str> {
    EventKind::ALL
        .iter()
        .filter(|k| mask & k.mask().bits() != 0)
        .map(|k| k.name())
        .collect()
}

/// Decodes the stats bytes (checked by the ABI's one parser).
pub fn parse_stats(bytes: &[u8]) -> Result<Stats, StatsError> {
    let view = StatsView::parse(bytes)?;
    let h = view.header;
    let shards: Vec<ShardStats> = view
        .shards()
        .enumerate()
        .map(|(i, s)| ShardStats {
            shard: i as u32,
            produced_slots: s.produced_slots,
            dropped: s.dropped,
            drained_slots: s.drained_slots,
            drained_records: s.drained_records,
            backlog_slots: s.backlog_slots,
        })
        .collect();
    Ok(Stats {
        abi_version: h.abi_version,
        generation: h.generation,
        probe_method: ProbeMethod::from_stats(h.probe_method).name(),
        vectors_patched: h.vectors_patched,
        slots_per_shard: h.slots_per_shard,
        enabled: h.config_flags & raw::MT_CF_ENABLE != 0,
        config_flags: h.config_flags,
        events: kind_names(h.event_mask),
        hook_calls: h.hook_calls,
        hooks_in_flight: h.hooks_in_flight,
        filtered: h.filtered,
        errors: h.errors,
        paths_skipped: h.paths_skipped,
        dropped: view.dropped(),
        shards,
    })
}

/// Writes stats for people.
pub fn write_stats(w: &mut impl Write, s: &Stats) -> io::Result<()> {
    write_stats_styled(w, s, &Palette::PLAIN)
}

/// [`write_stats`] in `palette`'s colours: labels and column titles as
/// headings, drops and skipped paths as losses, recording off as a notice.
pub fn write_stats_styled(w: &mut impl Write, s: &Stats, palette: &Palette) -> io::Result<()> {
    let (h, l, n) = (palette.heading, palette.loss, palette.notice);
    writeln!(
        w,
        "{h}kext{h:#}      ABI {}, generation {:#018x}, {} shards x {} slots, counts via {}, {} vnode-op vectors hooked",
        AbiVersion::from_field(s.abi_version),
        s.generation,
        s.shards.len(),
        s.slots_per_shard,
        s.probe_method,
        s.vectors_patched
    )?;
    let enabled = if s.enabled {
        "enabled".to_string()
    } else {
        format!("{n}DISABLED{n:#}")
    };
    writeln!(
        w,
        "{h}recording{h:#} {enabled}, events: {}",
        s.events.join(",")
    )?;
    writeln!(
        w,
        "{h}hooks{h:#}     {} calls, {} in flight, {} filtered out, {} errors (fail-open)",
        s.hook_calls, s.hooks_in_flight, s.filtered, s.errors
    )?;
    writeln!(
        w,
        "{h}{:>5} {:>14} {:>10} {:>14} {:>14} {:>10}{h:#}",
        "shard", "produced", "dropped", "drained slots", "drained recs", "backlog"
    )?;
    for sh in &s.shards {
        let dropped = match sh.dropped {
            0 => format!("{:>10}", 0),
            d => right_aligned(d, 10, l),
        };
        writeln!(
            w,
            "{:>5} {:>14} {dropped} {:>14} {:>14} {:>10}",
            sh.shard, sh.produced_slots, sh.drained_slots, sh.drained_records, sh.backlog_slots
        )?;
    }
    if s.paths_skipped > 0 {
        writeln!(
            w,
            "{l}!! {} PATH records skipped (no free path buffer): some files will show as vnode ids{l:#}",
            s.paths_skipped
        )?;
    }
    if s.dropped > 0 {
        writeln!(
            w,
            "{l}!! {} records dropped so far (rings full): read more often or record fewer kinds{l:#}",
            s.dropped
        )?;
    }
    if s.errors > 0 {
        writeln!(
            w,
            "{l}!! {} hook errors: operations that reached their filesystem untraced, or filesystems \
             left unhooked; a full vector table is named in the kernel log \
             (log show --last 1d --predicate 'eventMessage CONTAINS \"maptrace:\"'){l:#}",
            s.errors
        )?;
    }
    Ok(())
}

/// `value` right-aligned in `width` columns, in `style` but not its
/// padding (a column's width stays that of its text).
fn right_aligned(value: impl std::fmt::Display, width: usize, style: Style) -> String {
    let text = value.to_string();
    let pad = width.saturating_sub(text.chars().count());
    format!("{:pad$}{style}{text}{style:#}", "")
}

/// A config, decoded for display.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConfigView {
    /// Recording on.
    pub enabled: bool,
    /// Kinds recorded.
    pub events: Vec<&'static str>,
    /// Only this pid.
    pub pid: Option<u32>,
    /// All but this pid.
    pub exclude_pid: Option<u32>,
    /// The raw flags.
    pub flags: u32,
    /// The raw event mask.
    pub event_mask: u32,
}

/// Decodes a config for display.
pub fn view(c: &raw::mt_config) -> ConfigView {
    ConfigView {
        enabled: c.flags & raw::MT_CF_ENABLE != 0,
        events: kind_names(c.event_mask),
        pid: (c.flags & raw::MT_CF_PID_FILTER != 0).then_some(c.pid),
        exclude_pid: (c.flags & raw::MT_CF_PID_EXCLUDE != 0).then_some(c.pid),
        flags: c.flags,
        event_mask: c.event_mask,
    }
}

/// Writes a config for people.
pub fn write_config(w: &mut impl Write, v: &ConfigView) -> io::Result<()> {
    writeln!(
        w,
        "recording  {}",
        if v.enabled { "enabled" } else { "disabled" }
    )?;
    writeln!(
        w,
        "events     {}",
        if v.events.is_empty() {
            "(none)".into()
        } else {
            v.events.join(",")
        }
    )?;
    let pids = match (v.pid, v.exclude_pid) {
        (Some(p), _) => format!("only pid {p}"),
        (None, Some(p)) => format!("all but pid {p}"),
        (None, None) => "all".into(),
    };
    writeln!(w, "processes  {pids}")
}

/// What `config set` asks for; `None` keeps the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// Turn recording on or off.
    pub enable: Option<bool>,
    /// Kinds to record.
    pub events: Option<EventMask>,
    /// Pid filter: `Some(None)` clears it.
    pub pid: Option<Option<PidFilter>>,
}

/// A pid filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidFilter {
    /// Only this process.
    Only(u32),
    /// Every process but this one.
    Exclude(u32),
}

/// Applies a change to the current config, producing the struct to write,
/// or a message saying what to do instead.
pub fn apply(current: &raw::mt_config, change: &ConfigChange) -> Result<raw::mt_config, String> {
    if *change == ConfigChange::default() {
        return Err("nothing to change: give --enable, --disable, --events LIST, --pid N, --exclude-pid N or --all-pids".into());
    }
    let mut flags = ConfigFlags::from_bits_truncate(current.flags);
    let mut pid = current.pid;
    if let Some(on) = change.enable {
        flags.set(ConfigFlags::ENABLE, on);
    }
    let mask = change
        .events
        .map_or(current.event_mask & raw::MT_EVMASK_ALL, |m| m.bits());
    if mask == 0 {
        return Err(
            "an empty event list would record nothing: use --disable to stop recording".into(),
        );
    }
    if let Some(p) = change.pid {
        flags.remove(ConfigFlags::PID_FILTER | ConfigFlags::PID_EXCLUDE);
        pid = 0;
        match p {
            Some(PidFilter::Only(n)) => {
                flags.insert(ConfigFlags::PID_FILTER);
                pid = n;
            }
            Some(PidFilter::Exclude(n)) => {
                flags.insert(ConfigFlags::PID_EXCLUDE);
                pid = n;
            }
            None => {}
        }
    }
    if flags.contains(ConfigFlags::PID_FILTER | ConfigFlags::PID_EXCLUDE) {
        return Err("--pid and --exclude-pid cannot both be in force; pick one".into());
    }
    let config = Config {
        flags,
        mask: EventMask::from_bits_truncate(mask),
        pid,
    };
    // The kext's own rules (the ABI's), so a write it would refuse is not sent.
    Config::from_raw(&config.to_raw())
        .map(Config::to_raw)
        .map_err(|e| format!("the kext would refuse this config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::{FromZeros, IntoBytes};

    fn current() -> raw::mt_config {
        raw::mt_config {
            version: 1,
            size: 32,
            flags: raw::MT_CF_ENABLE | raw::MT_CF_PID_EXCLUDE,
            event_mask: raw::MT_EVMASK_ALL,
            pid: 42,
            reserved: [0; 4],
        }
    }

    #[test]
    fn changes_keep_what_they_do_not_touch() {
        let c = apply(
            &current(),
            &ConfigChange {
                events: Some(EventMask::MMAP | EventMask::PAGEIN),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.event_mask, raw::MT_EVMASK_MMAP | raw::MT_EVMASK_PAGEIN);
        assert_eq!(
            (c.flags, c.pid),
            (raw::MT_CF_ENABLE | raw::MT_CF_PID_EXCLUDE, 42)
        );
        let c = apply(
            &current(),
            &ConfigChange {
                pid: Some(Some(PidFilter::Only(7))),
                enable: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.flags, c.pid), (raw::MT_CF_PID_FILTER, 7));
        let c = apply(
            &current(),
            &ConfigChange {
                pid: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.flags, c.pid), (raw::MT_CF_ENABLE, 0));
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert!(
            apply(&current(), &ConfigChange::default())
                .unwrap_err()
                .contains("--enable")
        );
        let e = apply(
            &current(),
            &ConfigChange {
                events: Some(EventMask::empty()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("--disable"), "{e}");
        let mut both = current();
        both.flags |= raw::MT_CF_PID_FILTER;
        let e = apply(
            &both,
            &ConfigChange {
                enable: Some(true),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("pick one"), "{e}");
    }

    #[test]
    fn stats_decode_and_reject_bad_bytes() {
        // Field by field, so a renamed reserved word does not break the test.
        let mut h = raw::mt_stats_header::new_zeroed();
        h.magic = raw::MT_STATS_MAGIC;
        h.abi_version = raw::MT_ABI_VERSION as u16;
        h.header_size = 80;
        h.nshards = 2;
        h.slots_per_shard = 1024;
        h.probe_method = raw::MT_PROBE_OFFSET;
        h.vectors_patched = 3;
        h.config_flags = raw::MT_CF_ENABLE;
        h.event_mask = raw::MT_EVMASK_MMAP;
        h.generation = 9;
        h.hook_calls = 100;
        h.filtered = 1;
        h.paths_skipped = 2;
        let s0 = raw::mt_shard_stats {
            produced_slots: 10,
            dropped: 2,
            drained_slots: 8,
            drained_records: 8,
            backlog_slots: 0,
            reserved0: [0; 3],
        };
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(s0.as_bytes());
        bytes.extend_from_slice(s0.as_bytes());
        let s = parse_stats(&bytes).unwrap();
        assert_eq!(
            (s.shards.len(), s.dropped, s.probe_method, s.events.clone()),
            (2, 4, "offset", vec!["mmap"])
        );
        assert_eq!((s.paths_skipped, s.hook_calls, s.filtered), (2, 100, 1));
        let mut text = Vec::new();
        write_stats(&mut text, &s).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("2 PATH records skipped"), "{text}");
        assert!(text.contains("4 records dropped"), "{text}");
        assert!(!text.contains("hook errors"), "none: no line\n{text}");
        let mut failing = s.clone();
        failing.errors = 3;
        let mut t = Vec::new();
        write_stats(&mut t, &failing).unwrap();
        let t = String::from_utf8(t).unwrap();
        assert!(
            t.lines()
                .any(|l| l.starts_with("!! 3 hook errors: ") && l.contains("log show")),
            "{t}"
        );
        // In colour: the same text once the styles are out, the dropping
        // shards' counts in the loss style within their columns.
        let mut coloured = Vec::new();
        write_stats_styled(&mut coloured, &s, &Palette::ANSI).unwrap();
        let coloured = String::from_utf8(coloured).unwrap();
        assert_eq!(anstream::adapter::strip_str(&coloured).to_string(), text);
        let loss = Palette::ANSI.loss;
        assert!(
            coloured.contains(&format!("         {loss}2{loss:#} ")),
            "{coloured:?}"
        );
        let mut off = s.clone();
        off.enabled = false;
        let mut coloured = Vec::new();
        write_stats_styled(&mut coloured, &off, &Palette::ANSI).unwrap();
        let notice = Palette::ANSI.notice;
        let want = format!("recording\u{1b}[0m {notice}DISABLED{notice:#},");
        assert!(String::from_utf8(coloured).unwrap().contains(&want));
        assert_eq!(
            parse_stats(&bytes[..100]),
            Err(StatsError::Short {
                need: 208,
                have: 100
            })
        );
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(parse_stats(&bad), Err(StatsError::Format("bad magic")));
        let mut newer = bytes.clone();
        newer[5] = 2;
        assert!(matches!(parse_stats(&newer), Err(StatsError::Abi(_))));
        // Absurd counters (found by fuzzing recordings) saturate the total.
        let huge = raw::mt_shard_stats {
            dropped: u64::MAX - 1,
            ..s0
        };
        let mut absurd = bytes[..80].to_vec();
        absurd.extend_from_slice(huge.as_bytes());
        absurd.extend_from_slice(huge.as_bytes());
        assert_eq!(parse_stats(&absurd).unwrap().dropped, u64::MAX);
    }
}
