//! `maptrace record`: the raw batches, as they come, into a recording file.

use super::read::{Got, drive, stop_flag};
use super::source::open_source;
use crate::cli::{Limit, RecordArgs};
use anyhow::{Context, Result};
use maptrace::source::Source;
use maptrace::text::shown_path;
use maptrace::wallclock::unix_now_ns;
use maptrace::{control, exit, recording};
use maptrace_abi::HeaderTally;
use std::io::{BufWriter, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

pub fn run(source: Option<&str>, a: &RecordArgs) -> Result<u8> {
    let mut src = open_source(source, None)?;
    record(src.as_mut(), &a.output, &a.limit, a.quiet)
}

fn record(src: &mut dyn Source, path: &Path, limit: &Limit, quiet: bool) -> Result<u8> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create {}", shown_path(path)))?;
    // The source's anchor (both clocks read when it opened) dates the
    // recording, so a replay maps each record to UTC as the live stream did;
    // its page size lets a replay count pages as the traced machine does.
    let anchor = src.anchor();
    let header = recording::Header {
        abi_version: maptrace_abi::AbiVersion::CURRENT.field(),
        start_unix_ns: anchor.map_or_else(unix_now_ns, |a| a.unix_ns),
        start_clock_ns: anchor.map(|a| a.clock_ns),
        page_size: src.page_size().ok(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
    };
    let mut w = recording::Writer::new(BufWriter::with_capacity(1 << 20, file), &header)?;
    let stop = stop_flag();
    let started = Instant::now();
    let mut last_progress = started;
    // On a terminal one line redrawn four times a second; in a log (stderr
    // redirected) a whole line every ten seconds, with no carriage returns.
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(10)
    };
    let mut tally = HeaderTally::default();
    // Frames of a recording read back that failed their checksum.
    let mut corrupt = 0u64;
    let progress = |events: u64, dropped: u64, bytes: u64, done: bool| {
        if quiet {
            return;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "{}recording: {events} events, {dropped} dropped, {:.0} events/s, {:.1} MiB{}",
            if tty { "\r" } else { "" },
            events as f64 / secs,
            bytes as f64 / f64::from(1u32 << 20),
            if done || !tty { "\n" } else { "   " }
        );
    };
    drive(src, limit, &stop, |got| {
        let bytes = match got {
            Got::Batch(b) => b,
            Got::Corrupt(msg) => {
                // A corrupt frame of a recording read back is not copied.
                eprintln!("!! {msg}");
                corrupt += 1;
                return Ok(());
            }
        };
        // Drained records exist nowhere else now: put them on disk at once.
        w.write_batch(bytes)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", shown_path(path)))?;
        // A refused header is counted; the batch is recorded as it came.
        let _ = tally.batch(bytes);
        if last_progress.elapsed() >= every {
            last_progress = Instant::now();
            progress(tally.events(), tally.dropped(), w.bytes(), false);
        }
        Ok(())
    })?;
    // The counters after the last read close the recording: a replay then
    // reports drops that no batch carries, as the live stream would.
    if let Some(stats) = src.final_stats() {
        w.write_stats(&stats)
            .with_context(|| format!("writing {}", shown_path(path)))?;
        if let Ok(s) = control::parse_stats(&stats) {
            tally.kext_dropped(s.generation, s.dropped);
        }
    }
    let (events, dropped) = (tally.events(), tally.dropped());
    let bad = tally.refused() + corrupt;
    let frames = w.frames();
    let bytes = w.bytes();
    w.finish()
        .with_context(|| format!("writing {}", shown_path(path)))?;
    progress(events, dropped, bytes, true);
    if !quiet {
        eprintln!("wrote {frames} batches to {}", shown_path(path));
    }
    // Re-recording a cut recording copies what it had, and says so.
    let cut = src.cut();
    if let Some(c) = &cut {
        eprintln!("!! {c}");
    }
    Ok(if bad > 0 {
        eprintln!(
            "!! {bad} batches had bad headers or failed their checksum (bad headers recorded as they came)"
        );
        exit::CORRUPT
    } else if dropped > 0 || cut.is_some() {
        if dropped > 0 {
            eprintln!("!! the kext dropped {dropped} records during the recording");
        }
        exit::LOSS
    } else {
        exit::OK
    })
}
