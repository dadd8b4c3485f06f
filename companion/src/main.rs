//! `maptrace`: watch how files are mapped and paged in, from the kext on
//! macOS, from the XNU simulator anywhere, or from a recording.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use maptrace::control::{self, ConfigChange, PidFilter};
use maptrace::pipeline::{self, Filter, Item, KextDrops, Pipeline, Totals};
use maptrace::recording::{self, FileSource};
use maptrace::source::{Next, Source};
use maptrace::{exit, heatmap, output, perfetto, report, sysctl};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const AFTER_HELP: &str = "\
Sources (--source, or the MAPTRACE_SOURCE environment variable):
  sysctl        the loaded kext, through kern.maptrace.* (macOS, root)
  sim           the XNU simulator with the real kext loaded, running the demo workload
  sim:FILE      the simulator running the scenario script FILE
  file:FILE     a recording made with `maptrace record`
Commands that read events also take a recording as their INPUT argument.

Exit status: 0 everything read, nothing lost; 1 error; 2 bad command line;
3 finished but records were lost (dropped by the kext or skipped);
4 finished but part of the stream was corrupt.";

/// Trace file mappings and page-ins (VNOP_MMAP, VNOP_PAGEIN, VNOP_MNOMAP) with vnode usecounts.
#[derive(Debug, Parser)]
#[command(name = "maptrace", version, about, after_help = AFTER_HELP, max_term_width = 100)]
struct Cli {
    /// Where events come from: sysctl, sim, sim:SCENARIO or file:RECORDING.
    #[arg(long, global = true, env = "MAPTRACE_SOURCE", value_name = "SOURCE")]
    source: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the kext into the simulator, run the demo workload, show the live stream, then the report.
    Demo {
        /// Run this scenario script instead of the built-in demo workload.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Skip the live stream; show only the report.
        #[arg(long)]
        quiet: bool,
    },
    /// Show events as they happen: an aligned table, or JSON lines.
    Stream(StreamArgs),
    /// Save the raw event stream to a recording file.
    Record {
        /// The recording to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        limit: Limit,
        /// No progress line.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Per-file lifecycle: mapped epochs, usecounts and balance, page-ins by process, leak suspects, losses.
    Report {
        /// A recording to read (same as --source file:INPUT).
        input: Option<PathBuf>,
        /// Write JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limit: Limit,
    },
    /// Show the kext's counters: hooks, shards, drops, backlog.
    Stats {
        /// Write JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show or change what the kext records.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Convert events for other tools (Perfetto UI / chrome://tracing).
    Export {
        /// A recording to read (same as --source file:INPUT).
        input: Option<PathBuf>,
        /// The output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Perfetto)]
        format: ExportFormat,
        /// Where to write (default: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        limit: Limit,
    },
    /// Draw one SVG per file: file offset against time, page-ins and maps.
    Heatmap {
        /// A recording to read (same as --source file:INPUT).
        input: Option<PathBuf>,
        /// Directory to write the SVG files into (created if missing).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Only files whose path starts with this.
        #[arg(long, value_name = "PREFIX")]
        path: Option<String>,
        #[command(flatten)]
        limit: Limit,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    /// Chrome trace-event JSON, opened by ui.perfetto.dev.
    Perfetto,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Show the current config.
    Show {
        /// Write JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change the config (root); anything not given stays as it is.
    Set(SetArgs),
}

#[derive(Debug, Args)]
struct SetArgs {
    /// Start recording.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Stop recording.
    #[arg(long)]
    disable: bool,
    /// Kinds to record, comma-separated: mmap,pagein,mnomap,file_mmap,path,mark.
    #[arg(long, value_name = "LIST")]
    events: Option<String>,
    /// Record only this process.
    #[arg(long, value_name = "PID", conflicts_with_all = ["exclude_pid", "all_pids"])]
    pid: Option<u32>,
    /// Record every process except this one.
    #[arg(long, value_name = "PID", conflicts_with = "all_pids")]
    exclude_pid: Option<u32>,
    /// Record every process (clears --pid / --exclude-pid).
    #[arg(long)]
    all_pids: bool,
}

#[derive(Debug, Args)]
struct Limit {
    /// Stop a live source after this many seconds (default: until Ctrl-C, or the end of the workload).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Option<Duration>,
}

#[derive(Debug, Args)]
struct StreamArgs {
    /// A recording to read (same as --source file:INPUT).
    input: Option<PathBuf>,
    /// JSON lines, one object per event (fields in companion/README.md).
    #[arg(long)]
    json: bool,
    /// Only events of this process (repeat for several).
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Only files whose path starts with this.
    #[arg(long, value_name = "PREFIX")]
    path: Option<String>,
    /// Only these kinds, comma-separated: mmap,pagein,mnomap,file_mmap,path,mark.
    #[arg(long, value_name = "LIST", value_parser = pipeline::parse_kinds)]
    kind: Option<maptrace_abi::EventMask>,
    /// No closing summary line.
    #[arg(long)]
    no_summary: bool,
    #[command(flatten)]
    limit: Limit,
}

/// Parses a non-negative number of seconds.
fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("`{s}` is not a number of seconds (example: 2.5)"))
}

/// A stop request from Ctrl-C, shared with the read loop.
fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    // A second Ctrl-C ends the process at once.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    flag
}

fn open_source(spec: Option<&str>, input: Option<&Path>) -> Result<Box<dyn Source>> {
    if let Some(p) = input {
        if spec.is_some_and(|s| !s.starts_with("file:")) {
            bail!("give either an INPUT recording or --source, not both");
        }
        return Ok(Box::new(FileSource::open(p)?));
    }
    let default = if cfg!(target_os = "macos") {
        "sysctl"
    } else {
        "sim"
    };
    let spec = spec.unwrap_or(default);
    match spec.split_once(':') {
        Some(("file", path)) if !path.is_empty() => {
            Ok(Box::new(FileSource::open(Path::new(path))?))
        }
        Some(("sim", path)) if !path.is_empty() => open_sim(Some(Path::new(path))),
        None if spec == "sim" => open_sim(None),
        None if spec == "sysctl" => Ok(Box::new(sysctl::open_kext()?)),
        _ => bail!("unknown source `{spec}`: use sysctl, sim, sim:SCENARIO or file:RECORDING"),
    }
}

#[cfg(feature = "sim")]
fn open_sim(scenario: Option<&Path>) -> Result<Box<dyn Source>> {
    use maptrace::sim::{SimSource, Workload};
    Ok(Box::new(match scenario {
        Some(p) => SimSource::open_script(p)?,
        None => SimSource::open(Workload::Demo)?,
    }))
}

#[cfg(not(feature = "sim"))]
fn open_sim(scenario: Option<&Path>) -> Result<Box<dyn Source>> {
    let what = scenario.map_or("the demo workload".to_string(), |p| p.display().to_string());
    Err(anyhow!(
        "this maptrace was built without the simulator, so it cannot run {what}: build it with \
         `--features sim` (as `cargo xtask demo` does), or read a recording with --source file:FILE"
    ))
}

/// Reads batches until the source ends, the duration passes or Ctrl-C.
/// After a stop, a live source is drained once more so nothing already in
/// the kext's rings at that moment is left behind.
/// Batches read after a stop request, to take what was already in the rings.
const FINAL_DRAIN_BATCHES: u32 = 64;

fn drive(
    src: &mut dyn Source,
    limit: &Limit,
    stop: &AtomicBool,
    mut on_batch: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    let deadline = limit.duration.map(|d| started + d);
    let mut buf = Vec::new();
    let live = src.is_live();
    let mut after_stop = 0;
    loop {
        let stopping =
            stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d);
        // A busy live source may never be idle: the final drain is bounded.
        if stopping && (!live || after_stop >= FINAL_DRAIN_BATCHES) {
            break;
        }
        match src.next_batch(&mut buf)? {
            Next::Batch(n) => on_batch(buf.get(..n).unwrap_or(&[]))?,
            Next::End => break,
            Next::Idle if stopping || !live => break,
            Next::Idle => std::thread::sleep(src.poll_interval()),
        }
        if stopping {
            after_stop += 1;
        }
    }
    Ok(())
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
fn for_each_batch(
    src: &mut dyn Source,
    limit: &Limit,
    mut each: impl FnMut(&[Item]) -> Result<()>,
) -> Result<Totals> {
    let stop = stop_flag();
    let mut p = Pipeline::new();
    let mut items = Vec::new();
    drive(src, limit, &stop, |bytes| {
        items.clear();
        p.feed(bytes, &mut items);
        each(&items)
    })?;
    items.clear();
    p.finish_with(kext_drops(src).as_ref(), &mut items);
    each(&items)?;
    Ok(p.totals())
}

fn stream(src: &mut dyn Source, a: &StreamArgs, out: &mut impl Write) -> Result<Totals> {
    let filter = Filter {
        pids: a.pid.clone(),
        path_prefix: a.path.clone(),
        kinds: a.kind.unwrap_or(maptrace_abi::EventMask::all()),
    };
    let mut line = Vec::with_capacity(512);
    if !a.json {
        out.write_all(output::TABLE_HEADER.as_bytes())?;
    }
    let live = src.is_live();
    let totals = for_each_batch(src, &a.limit, |items| {
        line.clear();
        for item in items {
            if let Item::Event(ev) = item {
                if !filter.accepts(ev) {
                    continue;
                }
            }
            if a.json {
                output::item_json(&mut line, item);
            } else {
                output::item_line(&mut line, item);
            }
        }
        out.write_all(&line)?;
        // A live stream shows each batch as it comes.
        if live {
            out.flush()?;
        }
        Ok(())
    })?;
    if !a.no_summary {
        if a.json {
            line.clear();
            output::summary_json(&mut line, &totals);
            out.write_all(&line)?;
        } else {
            output::summary_row(out, &totals)?;
        }
    }
    out.flush()?;
    Ok(totals)
}

fn record(src: &mut dyn Source, path: &Path, limit: &Limit, quiet: bool) -> Result<u8> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let start_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let header = recording::Header {
        abi_version: maptrace_abi::raw::MT_ABI_VERSION as u16,
        start_unix_ns,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
    };
    let mut w = recording::Writer::new(BufWriter::with_capacity(1 << 20, file), &header)?;
    let stop = stop_flag();
    let started = Instant::now();
    let mut last_progress = started;
    let (mut events, mut dropped, mut bad) = (0u64, 0u64, 0u64);
    // Drops of earlier loads, and the load the last batch came from.
    let (mut dropped_before, mut last_generation) = (0u64, None);
    let progress = |events: u64, dropped: u64, bytes: u64, done: bool| {
        if quiet {
            return;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\rrecording: {events} events, {dropped} dropped, {:.0} events/s, {:.1} MiB{}",
            events as f64 / secs,
            bytes as f64 / f64::from(1u32 << 20),
            if done { "\n" } else { "   " }
        );
    };
    drive(src, limit, &stop, |bytes| {
        // Drained records exist nowhere else now: put them on disk at once.
        w.write_batch(bytes)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        match maptrace_abi::decode::parse_batch_header(bytes) {
            Ok(b) => {
                events = events.saturating_add(b.header.total_records);
                if last_generation != Some(b.header.generation) {
                    // A reload restarts the kext's counters.
                    dropped_before = dropped_before.saturating_add(dropped);
                    dropped = 0;
                    last_generation = Some(b.header.generation);
                }
                dropped = dropped.max(b.header.total_dropped);
            }
            Err(_) => bad += 1,
        }
        if last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            progress(
                events,
                dropped_before.saturating_add(dropped),
                w.bytes(),
                false,
            );
        }
        Ok(())
    })?;
    // The counters after the last read close the recording: a replay then
    // reports drops that no batch carries, as the live stream would.
    if let Some(stats) = src.final_stats() {
        w.write_stats(&stats)
            .with_context(|| format!("writing {}", path.display()))?;
        if let Ok(s) = control::parse_stats(&stats)
            && last_generation.is_none_or(|g| g == s.generation)
        {
            dropped = dropped.max(s.dropped);
        }
    }
    let dropped = dropped_before.saturating_add(dropped);
    let frames = w.frames();
    let bytes = w.bytes();
    w.finish()
        .with_context(|| format!("writing {}", path.display()))?;
    progress(events, dropped, bytes, true);
    if !quiet {
        eprintln!("wrote {frames} batches to {}", path.display());
    }
    Ok(if bad > 0 {
        eprintln!("!! {bad} batches had bad headers (recorded as they came)");
        exit::CORRUPT
    } else if dropped > 0 {
        eprintln!("!! the kext dropped {dropped} records during the recording");
        exit::LOSS
    } else {
        exit::OK
    })
}

fn warn_losses(t: &Totals) {
    if t.dropped > 0 || t.gap_slots > 0 || t.corrupt > 0 {
        eprintln!(
            "maptrace: warning: the stream was not complete: {} records dropped, {} slots skipped, {} corrupt parts",
            t.dropped, t.gap_slots, t.corrupt
        );
    }
}

fn run(cli: Cli) -> Result<u8> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let source = cli.source.as_deref();
    match cli.command {
        Command::Demo { scenario, quiet } => {
            let spec = match &scenario {
                Some(p) => format!("sim:{}", p.display()),
                None => "sim".into(),
            };
            let mut src = open_source(Some(&spec), None)?;
            let mut b = report::Builder::new();
            let limit = Limit { duration: None };
            if !quiet {
                out.write_all(output::TABLE_HEADER.as_bytes())?;
            }
            let mut line = Vec::with_capacity(1 << 16);
            let totals = for_each_batch(src.as_mut(), &limit, |items| {
                line.clear();
                for item in items {
                    b.observe(item);
                    output::item_line(&mut line, item);
                }
                if !quiet {
                    out.write_all(&line)?;
                    out.flush()?;
                }
                Ok(())
            })?;
            if !quiet {
                output::summary_row(&mut out, &totals)?;
                writeln!(out)?;
            }
            report::write_human(&mut out, &b.finish(&totals))?;
            out.flush()?;
            Ok(totals.exit_status())
        }
        Command::Stream(a) => {
            let mut src = open_source(source, a.input.as_deref())?;
            let t = stream(src.as_mut(), &a, &mut out)?;
            Ok(t.exit_status())
        }
        Command::Record {
            output: path,
            limit,
            quiet,
        } => {
            let mut src = open_source(source, None)?;
            record(src.as_mut(), &path, &limit, quiet)
        }
        Command::Report { input, json, limit } => {
            let mut src = open_source(source, input.as_deref())?;
            let mut b = report::Builder::new();
            let totals = for_each_batch(src.as_mut(), &limit, |items| {
                items.iter().for_each(|i| b.observe(i));
                Ok(())
            })?;
            let r = b.finish(&totals);
            if json {
                serde_json::to_writer_pretty(&mut out, &r)?;
                writeln!(out)?;
            } else {
                report::write_human(&mut out, &r)?;
            }
            out.flush()?;
            warn_losses(&totals);
            Ok(totals.exit_status())
        }
        Command::Stats { json } => {
            let mut src = open_source(source, None)?;
            let bytes = src.stats()?;
            let s = control::parse_stats(&bytes)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &s)?;
                writeln!(out)?;
            } else {
                control::write_stats(&mut out, &s)?;
            }
            out.flush()?;
            Ok(exit::OK)
        }
        Command::Config {
            action: ConfigAction::Show { json },
        } => {
            let mut src = open_source(source, None)?;
            let v = control::view(&src.config()?);
            if json {
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                control::write_config(&mut out, &v)?;
            }
            out.flush()?;
            Ok(exit::OK)
        }
        Command::Config {
            action: ConfigAction::Set(a),
        } => {
            let change = ConfigChange {
                enable: match (a.enable, a.disable) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                events: a
                    .events
                    .as_deref()
                    .map(pipeline::parse_kinds)
                    .transpose()
                    .map_err(|e| anyhow!("--events: {e}"))?,
                pid: match (a.pid, a.exclude_pid, a.all_pids) {
                    (Some(p), _, _) => Some(Some(PidFilter::Only(p))),
                    (_, Some(p), _) => Some(Some(PidFilter::Exclude(p))),
                    (_, _, true) => Some(None),
                    _ => None,
                },
            };
            if change == ConfigChange::default() {
                bail!(
                    "nothing to change: give --enable, --disable, --events LIST, --pid N, --exclude-pid N or --all-pids"
                );
            }
            let mut src = open_source(source, None)?;
            let new = control::apply(&src.config()?, &change).map_err(|e| anyhow!(e))?;
            src.set_config(&new)?;
            control::write_config(&mut out, &control::view(&src.config()?))?;
            out.flush()?;
            Ok(exit::OK)
        }
        Command::Export {
            input,
            format: ExportFormat::Perfetto,
            output: dest,
            limit,
        } => {
            let mut src = open_source(source, input.as_deref())?;
            let mut b = perfetto::Builder::new();
            let totals = for_each_batch(src.as_mut(), &limit, |items| {
                items.iter().for_each(|i| b.observe(i));
                Ok(())
            })?;
            let doc = b.finish();
            match dest {
                Some(p) => {
                    let f = std::fs::File::create(&p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    let mut w = BufWriter::new(f);
                    perfetto::write(&mut w, &doc)?;
                    w.flush()?;
                    eprintln!("wrote {} (open it at https://ui.perfetto.dev)", p.display());
                }
                None => {
                    perfetto::write(&mut out, &doc)?;
                    out.flush()?;
                }
            }
            warn_losses(&totals);
            Ok(totals.exit_status())
        }
        Command::Heatmap {
            input,
            output: dir,
            path,
            limit,
        } => {
            let mut src = open_source(source, input.as_deref())?;
            let mut b = heatmap::Builder::new();
            let totals = for_each_batch(src.as_mut(), &limit, |items| {
                items.iter().for_each(|i| b.observe(i));
                Ok(())
            })?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut written = 0;
            for f in b.finish() {
                if let Some(prefix) = &path {
                    if !f
                        .path
                        .as_deref()
                        .is_some_and(|p| p.starts_with(prefix.as_str()))
                    {
                        continue;
                    }
                }
                let file = dir.join(format!("{}.svg", f.file_stem()));
                std::fs::write(&file, heatmap::render(&f))
                    .with_context(|| format!("cannot write {}", file.display()))?;
                writeln!(
                    out,
                    "{}  {}",
                    file.display(),
                    f.path.as_deref().unwrap_or("(path unknown)")
                )?;
                written += 1;
            }
            out.flush()?;
            if written == 0 {
                bail!(
                    "no file had page-ins or maps to draw{}",
                    path.map_or(String::new(), |p| format!(" under `{p}`"))
                );
            }
            warn_losses(&totals);
            Ok(totals.exit_status())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed pipe (`maptrace stream | head`) is the reader's choice.
            if e.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::from(exit::OK);
            }
            eprintln!("maptrace: error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}
