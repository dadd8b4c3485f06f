//! `maptrace demo`: the simulator with the real kext, its live stream in
//! chapters, then the report and one closing line on what was lost.

use super::read::for_each_batch;
use crate::cli::{DemoArgs, Limit};
use anyhow::Result;
use maptrace::output;
use maptrace::pagesize::PageBasis;
use maptrace::palette::Palette;
use maptrace::pipeline::{Item, Loss, Totals};
use maptrace::report;
use std::io::Write;

/// What the table's columns mean, printed once before the stream.
pub const KEY: &str = "\
key: USE, KUSE, IO = the vnode's usecount, kusecount and iocount just before the operation
     (- not measured); PID 0 = the kernel (kernel_task, e.g. an eject's or a jetsam's unmaps)
     or the kext itself (its `mark` rows); TIME = seconds since boot
";

/// Where the stream lost records: each loss line, with the chapter it
/// came in and the last event time before it.
#[derive(Debug, Default)]
struct Losses {
    places: Vec<String>,
}

impl Losses {
    fn note(&mut self, item: &Item, chapter: Option<&str>, last_ns: Option<u64>) {
        let Item::Loss(loss) = item else {
            return;
        };
        let (what, shard) = match loss {
            Loss::Dropped { shard, count, .. } => {
                (format!("{count} dropped (the kext's ring was full)"), shard)
            }
            Loss::Gap { shard, slots } => (format!("{slots} slots skipped"), shard),
        };
        let mut at = format!("{what} on shard {shard}");
        if let Some(c) = chapter {
            at.push_str(&format!(" in \"{c}\""));
        }
        if let Some(ns) = last_ns {
            at.push_str(&format!(
                ", after the event at {}.{:06}s",
                ns / 1_000_000_000,
                ns % 1_000_000_000 / 1000
            ));
        }
        self.places.push(at);
    }

    /// The demo's last line: the exact count and where.
    fn closing_line(&self, t: &Totals, palette: &Palette) -> String {
        if t.dropped == 0 && t.gap_slots == 0 {
            let ok = palette.ok;
            return format!("lost: {ok}nothing{ok:#}");
        }
        let l = palette.loss;
        let mut line = format!("lost: {l}exactly {} records", t.dropped);
        if t.gap_slots > 0 {
            line.push_str(&format!(" and {} slots", t.gap_slots));
        }
        format!("{line}{l:#}: {}", self.places.join("; "))
    }
}

pub fn run(
    source: Option<&str>,
    a: &DemoArgs,
    palette: &Palette,
    mut out: &mut impl Write,
) -> Result<u8> {
    if let Some(s) = source {
        eprintln!(
            "maptrace: note: demo always runs its workload on the simulator (--scenario FILE for \
             another); the source `{}` (--source or MAPTRACE_SOURCE) is not used: \
             `maptrace --source {0} stream` reads it",
            maptrace::text::shown(s)
        );
    }
    let quiet = a.quiet;
    let (mut src, chapters) = open(a)?;
    let mut b = report::Builder::new();
    b.set_page_basis(PageBasis::resolve(None, src.page_size()));
    let limit = Limit { duration: None };
    if !quiet {
        out.write_all(KEY.as_bytes())?;
        output::write_table_header(&mut out, false, palette)?;
    }
    let mut line = Vec::with_capacity(1 << 16);
    let mut chapter: Option<String> = None;
    let mut last_ns = None;
    let mut losses = Losses::default();
    let mut names_hidden = 0u64;
    let totals = for_each_batch(src.as_mut(), &limit, |items| {
        line.clear();
        // A chapter reached before this batch was read heads its events (the
        // simulator runs the demo in lockstep with this reader).
        while let Some(c) = chapters.take() {
            if !quiet {
                let h = palette.heading;
                writeln!(line, "\n{h}== {c}{h:#}")?;
            }
            chapter = Some(c);
        }
        for item in items {
            b.observe(item);
            losses.note(item, chapter.as_deref(), last_ns);
            if let Item::Event(ev) = item {
                last_ns = Some(ev.rec.timestamp_ns);
            }
            // As `stream`'s table: each row names its file and process.
            if output::hidden_by_default(item) {
                names_hidden += 1;
            } else {
                output::item_line_styled(&mut line, item, None, palette);
            }
        }
        if !quiet {
            out.write_all(&line)?;
            out.flush()?;
        }
        Ok(())
    })?;
    if !quiet {
        output::summary_row_styled(&mut out, &totals, palette)?;
        if names_hidden > 0 {
            writeln!(
                out,
                "-- {names_hidden} path and proc rows not shown (each row names its file and \
                 process): `maptrace --source sim stream --kind all` shows them"
            )?;
        }
        writeln!(out)?;
    }
    let mut r = b.finish(&totals);
    report::sort::apply(&mut r, &report::View::default());
    report::write_human_styled(&mut out, &r, palette)?;
    writeln!(out)?;
    writeln!(out, "{}", losses.closing_line(&totals, palette))?;
    out.flush()?;
    Ok(demo_status(a, &totals))
}

/// The built-in demo loses records on purpose (its chapter 3) and says
/// exactly how many on its last line, so it succeeds after a loss
/// (`cargo xtask demo` and CI run it); a test pins that count, so a loss
/// anywhere else shows. Another scenario gets the usual statuses.
fn demo_status(a: &DemoArgs, t: &Totals) -> u8 {
    match t.exit_status() {
        maptrace::exit::LOSS if a.scenario.is_none() => maptrace::exit::OK,
        status => status,
    }
}

/// The chapter headings the workload reached, for the stream.
trait ChapterQueue {
    fn take(&self) -> Option<String>;
}

#[cfg(feature = "sim")]
impl ChapterQueue for maptrace::sim::Chapters {
    fn take(&self) -> Option<String> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }
}

#[cfg(feature = "sim")]
fn open(a: &DemoArgs) -> Result<(Box<dyn maptrace::source::Source>, impl ChapterQueue)> {
    use maptrace::sim::{Pace, SimSource, Workload};
    let workload = match &a.scenario {
        Some(p) => Workload::Script(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", p.display()))?,
        ),
        None => Workload::Demo,
    };
    let src = SimSource::open_paced(workload, Pace::Lockstep)?;
    let chapters = src.chapters();
    Ok((Box::new(src), chapters))
}

#[cfg(not(feature = "sim"))]
fn open(a: &DemoArgs) -> Result<(Box<dyn maptrace::source::Source>, impl ChapterQueue)> {
    struct NoChapters;
    impl ChapterQueue for NoChapters {
        fn take(&self) -> Option<String> {
            None
        }
    }
    let spec = match &a.scenario {
        Some(p) => format!("sim:{}", p.display()),
        None => "sim".into(),
    };
    // Says how to build the simulator in.
    let src = super::source::open_source(Some(&spec), None)?;
    Ok((src, NoChapters))
}
