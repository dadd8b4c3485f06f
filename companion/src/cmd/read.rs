//! Reading a source until it ends, its time is up or Ctrl-C, and feeding
//! the pipeline with what comes.

use crate::cli::Limit;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use maptrace::control;
use maptrace::pipeline::{Item, KextDrops, Pipeline, Totals};
use maptrace::source::{Next, Source};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A stop request from Ctrl-C, SIGTERM or SIGHUP (`kill`, a closed
/// terminal, a service manager), shared with the read loop.
pub fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    // A second request ends the process at once.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    flag
}

/// Batches read after a stop request, to take what was already in the rings.
const FINAL_DRAIN_BATCHES: u32 = 64;

/// What [`drive`] hands on: a batch, or a skipped part of the source.
pub enum Got<'a> {
    /// A batch's bytes.
    Batch(&'a [u8]),
    /// A part that failed its check (a recording's frame), and why.
    Corrupt(&'a str),
}

/// Reads batches until the source ends, the duration passes or Ctrl-C.
/// After a stop, a live source is drained once more so nothing already in
/// the kext's rings at that moment is left behind.
pub fn drive(
    src: &mut dyn Source,
    limit: &Limit,
    stop: &AtomicBool,
    mut on_batch: impl FnMut(Got<'_>) -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    let deadline = limit.duration.map(|d| started + d);
    let mut buf = Vec::new();
    let live = src.is_live();
    let mut after_stop = 0;
    let mut stop_sent = false;
    let bar = progress_bar(src);
    loop {
        let stopping =
            stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d);
        if stopping && !stop_sent {
            src.stop();
            stop_sent = true;
        }
        // A busy live source may never be idle: the final drain is bounded.
        if stopping && (!live || after_stop >= FINAL_DRAIN_BATCHES) {
            break;
        }
        match src.next_batch(&mut buf)? {
            Next::Batch(n) => {
                let batch = Got::Batch(buf.get(..n).unwrap_or(&[]));
                match &bar {
                    // Output written meanwhile (a table on the same terminal)
                    // goes out with the bar hidden.
                    Some(bar) => {
                        bar.suspend(|| on_batch(batch))?;
                        bar.set_position(src.progress().map_or(0, |(done, _)| done));
                    }
                    None => on_batch(batch)?,
                }
            }
            Next::Corrupt(msg) => on_batch(Got::Corrupt(&msg))?,
            Next::End => break,
            Next::Idle if stopping || !live => break,
            Next::Idle => std::thread::sleep(src.poll_interval()),
        }
        if stopping {
            after_stop += 1;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// A progress bar on stderr for a source with a known end (a recording),
/// only when stderr is a terminal: a pipe or a file gets nothing.
fn progress_bar(src: &dyn Source) -> Option<ProgressBar> {
    let (_, total) = src.progress()?;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}") {
        bar.set_style(style);
    }
    Some(bar)
}

/// The kext's drop counters after the last read (read now from a live
/// source, or a recording's closing frame): drops after a shard's last
/// record read reach no batch, only these counters.
fn kext_drops(src: &mut dyn Source) -> Option<KextDrops> {
    let stats = control::parse_stats(&src.final_stats()?).ok()?;
    Some(KextDrops {
        generation: stats.generation,
        per_shard: stats.shards.iter().map(|s| s.dropped).collect(),
    })
}

/// Runs `each` on every item of the source, then on the closing items.
pub fn for_each_batch(
    src: &mut dyn Source,
    limit: &Limit,
    mut each: impl FnMut(&[Item]) -> Result<()>,
) -> Result<Totals> {
    let stop = stop_flag();
    let mut p = Pipeline::new();
    let mut items = Vec::new();
    let mut skipped = 0u64;
    drive(src, limit, &stop, |got| {
        items.clear();
        match got {
            Got::Batch(bytes) => {
                p.feed(bytes, &mut items);
            }
            Got::Corrupt(msg) => {
                skipped += 1;
                items.push(Item::Corrupt(msg.to_string()));
            }
        }
        each(&items)
    })?;
    items.clear();
    p.finish_with(kext_drops(src).as_ref(), &mut items);
    each(&items)?;
    Ok(close(src, &p, skipped))
}

/// Runs `each` on every item of the source as the pipeline makes it (no
/// batch of items kept), then with `None` at the end of each batch and
/// after the closing items.
pub fn for_each_item(
    src: &mut dyn Source,
    limit: &Limit,
    mut each: impl FnMut(Option<&Item>) -> Result<()>,
) -> Result<Totals> {
    let stop = stop_flag();
    let mut p = Pipeline::new();
    let mut skipped = 0u64;
    drive(src, limit, &stop, |got| {
        match got {
            Got::Batch(bytes) => {
                // The first error stops the writing; the batch is still
                // decoded whole, so the totals stay right.
                let mut failed = Ok(());
                p.feed_each(bytes, |item| {
                    if failed.is_ok() {
                        failed = each(Some(&item));
                    }
                });
                failed?;
            }
            Got::Corrupt(msg) => {
                skipped += 1;
                each(Some(&Item::Corrupt(msg.to_string())))?;
            }
        }
        each(None)
    })?;
    let mut items = Vec::new();
    p.finish_with(kext_drops(src).as_ref(), &mut items);
    for item in &items {
        each(Some(item))?;
    }
    each(None)?;
    Ok(close(src, &p, skipped))
}

/// The stream's totals, with the parts skipped before decoding and the
/// recording's cut end.
fn close(src: &mut dyn Source, p: &Pipeline, skipped: u64) -> Totals {
    let mut totals = p.totals();
    totals.corrupt = totals.corrupt.saturating_add(skipped);
    if let Some(cut) = src.cut() {
        // Said at once, whatever the output: the end of the recording is
        // missing, so its closing counters were never read either.
        eprintln!("maptrace: warning: {cut}");
        totals.cut_bytes = cut.bytes.max(1);
    }
    totals
}

/// Runs `observe` on every item of the source, closing items included, as
/// the pipeline makes them (no batch of items kept).
pub fn observe_each(
    src: &mut dyn Source,
    limit: &Limit,
    mut observe: impl FnMut(&Item),
) -> Result<Totals> {
    for_each_item(src, limit, |item| {
        if let Some(item) = item {
            observe(item);
        }
        Ok(())
    })
}

/// Says on stderr that the stream was not complete, after the output.
pub fn warn_losses(t: &Totals) {
    if t.dropped > 0 || t.gap_slots > 0 || t.corrupt > 0 || t.cut_bytes > 0 {
        eprintln!(
            "maptrace: warning: the stream was not complete: {} records dropped, {} slots skipped, {} corrupt parts{}",
            t.dropped,
            t.gap_slots,
            t.corrupt,
            if t.cut_bytes > 0 {
                format!(
                    ", the recording cut off ({} bytes of its last frame unread)",
                    t.cut_bytes
                )
            } else {
                String::new()
            }
        );
    }
}
