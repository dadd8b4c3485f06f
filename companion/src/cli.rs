//! The command line: every subcommand, flag and help text, as clap parses
//! them. What a command does lives in `cmd/`.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use maptrace::pagesize::PageSize;
use maptrace::pipeline;
use maptrace::report::{self, SortKey};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Sources (--source, or the MAPTRACE_SOURCE environment variable):
  sysctl        the loaded kext, through kern.maptrace.* (macOS, root)
  sim           the XNU simulator with the real kext loaded, running the demo workload
  sim:FILE      the simulator running the scenario script FILE
  file:FILE     a recording made with `maptrace record`
Commands that read events also take a recording as their INPUT argument.

Exit status: 0 everything read, nothing lost; 1 error; 2 bad command line;
3 finished but records were lost (dropped by the kext, skipped, or the
recording was cut off); 4 finished but part of the stream was corrupt (a
recording frame failing its checksum included);
5 `report --fail-on-suspects` listed leak suspects (3 and 4 come first).";

const STREAM_EXAMPLES: &str = "\
Examples:
  sudo maptrace stream --pid 501 --kind mmap,pagein,mnomap
  sudo maptrace stream --json --time wall | jq 'select(.kind == \"pagein\")'
  maptrace stream app.mtr --path /Applications/Mail.app/";

const RECORD_EXAMPLES: &str = "\
Examples:
  sudo maptrace record -o launch.mtr --duration 30
  maptrace --source sim:storm.mts record -o storm.mtr";

const REPORT_EXAMPLES: &str = "\
Examples:
  maptrace report launch.mtr --top 10 --sort pageins
  maptrace report launch.mtr --path '/Volumes/**' --fail-on-suspects
  maptrace report launch.mtr --json | jq '.suspects'";

const HEATMAP_EXAMPLES: &str = "\
Examples:
  maptrace heatmap launch.mtr -o heat --path /Applications/ --time-axis compressed
  maptrace heatmap launch.mtr -o heat --format png";

/// Trace file mappings and page-ins (VNOP_MMAP, VNOP_PAGEIN, VNOP_MNOMAP) with vnode usecounts.
#[derive(Debug, Parser)]
#[command(name = "maptrace", version, about, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// Where events come from: sysctl, sim, sim:SCENARIO or file:RECORDING.
    #[arg(long, global = true, env = "MAPTRACE_SOURCE", value_name = "SOURCE")]
    pub source: Option<String>,
    /// Colour the tables, text and help people read: auto (on a terminal, unless NO_COLOR is set), always or never. JSON and CSV never are.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour (`--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// When stdout is a terminal and NO_COLOR is not set (or CLICOLOR_FORCE is).
    Auto,
    /// Always, even into a pipe or a file (`| less -R`).
    Always,
    /// Never.
    Never,
}

impl Cli {
    /// Parses the process's arguments as [`Parser::parse`] does, with
    /// clap's help and errors in the colour `--color` asks for.
    pub fn parse_coloured() -> Cli {
        let args: Vec<OsString> = std::env::args_os().collect();
        let mut cmd = command_for(&args);
        let mut matches = cmd
            .try_get_matches_from_mut(args)
            .unwrap_or_else(|e| e.exit());
        Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
    }
}

/// The command line for `args` (the program's name first): clap writes its
/// help and errors while it parses, in the colour set before, so the
/// `--color` among `args` is read first. Without a valid one, clap's
/// `auto` reads the terminal and environment as the palette's does.
fn command_for(args: &[OsString]) -> clap::Command {
    let choice = colour_in(args).map_or(clap::ColorChoice::Auto, |c| match c {
        ColorArg::Auto => clap::ColorChoice::Auto,
        ColorArg::Always => clap::ColorChoice::Always,
        ColorArg::Never => clap::ColorChoice::Never,
    });
    Cli::command().color(choice)
}

/// The last valid `--color WHEN` or `--color=WHEN` in `args` before any
/// `--` (after it, words are values), as clap keeps the last one given. A
/// value clap refuses counts as none: clap then reports it.
fn colour_in(args: &[OsString]) -> Option<ColorArg> {
    let words: Vec<Option<&str>> = args
        .iter()
        .skip(1)
        .map(|a| a.to_str())
        .take_while(|a| *a != Some("--"))
        .collect();
    let mut choice = None;
    for (i, word) in words.iter().enumerate() {
        let value = match *word {
            Some("--color") => words.get(i + 1).copied().flatten(),
            Some(w) => w.strip_prefix("--color="),
            None => None,
        };
        if let Some(c) = value.and_then(|v| ColorArg::from_str(v, false).ok()) {
            choice = Some(c);
        }
    }
    choice
}

impl From<ColorArg> for anstream::ColorChoice {
    fn from(c: ColorArg) -> Self {
        match c {
            ColorArg::Auto => Self::Auto,
            ColorArg::Always => Self::Always,
            ColorArg::Never => Self::Never,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kext into the simulator, run the demo workload, show the live stream, then the report.
    Demo(DemoArgs),
    /// Show events as they happen: an aligned table, or JSON lines.
    #[command(after_help = STREAM_EXAMPLES)]
    Stream(StreamArgs),
    /// Save the raw event stream to a recording file.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Per-file lifecycle: mapped epochs, usecounts and balance, page-ins by process, leak suspects, losses.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Show the kext's counters: hooks, shards, drops, backlog (of a recording: those it closes with).
    Stats(StatsArgs),
    /// Describe a recording: format, host, start, duration, counts, losses, whether it was cut off.
    Info(InfoArgs),
    /// Show or change what the kext records.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Convert events for other tools (Perfetto UI / chrome://tracing).
    Export(ExportArgs),
    /// Draw one picture per file (SVG, or PNG): file offset against time, page-ins and maps.
    #[command(after_help = HEATMAP_EXAMPLES)]
    Heatmap(HeatmapArgs),
    /// Print the JSON Schema of `stream --json` lines, or of `report --json`.
    Schema(SchemaArgs),
    /// Print a shell completion script (e.g. `maptrace completions bash > /etc/bash_completion.d/maptrace`).
    Completions(CompletionsArgs),
    /// Print the manual page as roff (`maptrace man | man -l -`; `maptrace man stream` for a command's own page).
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (e.g. `stream`, or `config set`); none: maptrace(1), which lists them.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which output's schema.
    #[arg(value_enum, default_value_t = SchemaOf::Events)]
    pub of: SchemaOf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaOf {
    /// A line of `stream --json` (maptrace.events).
    Events,
    /// The document of `report --json` (maptrace.report).
    Report,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run this scenario script instead of the built-in demo workload.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Skip the live stream; show only the report.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The recording to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub limit: Limit,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A recording to read (same as --source file:INPUT).
    pub input: Option<PathBuf>,
    /// Write JSON instead of text (same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// The output format: text, json (one document) or csv (one row per file and epoch).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Order files and processes by this, largest first (paths alphabetically).
    #[arg(long, value_enum, default_value_t = SortKey::Pageins)]
    pub sort: SortKey,
    /// Show the first N files and processes (default: 20 as text, all as JSON; 0: all).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub top: Option<usize>,
    /// Show every file and process (same as --top 0).
    #[arg(long)]
    pub all: bool,
    /// Only events of this process (repeat for several).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only events of processes with this name (repeat for several; names come from PROC records).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only files whose path matches this glob (`*` within a component, `**` across; repeat for several).
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    pub path: Vec<String>,
    /// Only events at least SECS after the trace's first record about a file, or from a UTC TIME on (RFC 3339; needs the source's clock anchor).
    #[arg(long, value_name = "SECS|TIME", value_parser = parse_bound)]
    pub since: Option<Bound>,
    /// Only events at most SECS after the trace's first record about a file, or until a UTC TIME (RFC 3339).
    #[arg(long, value_name = "SECS|TIME", value_parser = parse_bound)]
    pub until: Option<Bound>,
    /// Times as seconds since boot (rel) or UTC (wall: needs a live source or a format 4 recording).
    #[arg(long, value_enum, value_name = "rel|wall", default_value_t = TimeArg::Rel)]
    pub time: TimeArg,
    /// Count distinct pages in pages of BYTES (4096, 16384, 4k, 16k: a power of two from 4k to 64k) rather than the traced machine's page size.
    #[arg(long, value_name = "BYTES", value_parser = parse_page_size)]
    pub page_size: Option<PageSize>,
    /// Exit with status 5 when the report lists leak suspects (for CI).
    #[arg(long)]
    pub fail_on_suspects: bool,
    #[command(flatten)]
    pub limit: Limit,
}

impl ReportArgs {
    /// The format asked for, `--json` included.
    pub fn format(&self) -> ReportFormat {
        if self.json {
            ReportFormat::Json
        } else {
            self.format
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Text for people.
    Text,
    /// One JSON document.
    Json,
    /// CSV, one row per file and mapped epoch.
    Csv,
}

/// How times are shown (`--time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimeArg {
    /// The kext's clock: seconds since boot, as the records carry it.
    Rel,
    /// UTC (RFC 3339), through the source's clock anchor.
    Wall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamFormat {
    /// An aligned table for people.
    Table,
    /// JSON lines (the contract in companion/README.md; `maptrace schema`).
    Json,
    /// CSV with one fixed header: the JSON lines' fields as columns.
    Csv,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Write JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A recording: show the counters it closes with (same as --source file:INPUT).
    pub input: Option<PathBuf>,
    /// Write JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The recording to describe.
    pub input: PathBuf,
    /// Write JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A recording to read (same as --source file:INPUT).
    pub input: Option<PathBuf>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Perfetto)]
    pub format: ExportFormat,
    /// Where to write (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub limit: Limit,
}

#[derive(Debug, Args)]
pub struct HeatmapArgs {
    /// A recording to read (same as --source file:INPUT).
    pub input: Option<PathBuf>,
    /// Directory to write the pictures into (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Only files at or under this path, by whole components (/data/a: not /data/ab).
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Time to scale (linear), or with idle stretches over 1 ms and 5 % of the span cut to a narrow labelled band (compressed).
    #[arg(long, value_enum, value_name = "linear|compressed", default_value_t = TimeAxisArg::Linear)]
    pub time_axis: TimeAxisArg,
    /// Picture format: svg (scalable, hover for details) or png (to paste into a bug report; labels use a system font).
    #[arg(long, value_enum, value_name = "svg|png", default_value_t = ImageFormat::Svg)]
    pub format: ImageFormat,
    #[command(flatten)]
    pub limit: Limit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageFormat {
    /// Scalable, with hover titles.
    Svg,
    /// Raster, twice the SVG's size.
    Png,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimeAxisArg {
    /// Time to scale.
    Linear,
    /// Long idle stretches cut.
    Compressed,
}

impl From<TimeAxisArg> for maptrace::heatmap::TimeAxis {
    fn from(a: TimeAxisArg) -> Self {
        match a {
            TimeAxisArg::Linear => Self::Linear,
            TimeAxisArg::Compressed => Self::Compressed,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// Chrome trace-event JSON, opened by ui.perfetto.dev.
    Perfetto,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Show the current config.
    Show(JsonArgs),
    /// Change the config (root); anything not given stays as it is.
    Set(SetArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Start recording.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Stop recording.
    #[arg(long)]
    pub disable: bool,
    /// Kinds to record, comma-separated: mmap,pagein,mnomap,file_mmap,path,mark.
    #[arg(long, value_name = "LIST")]
    pub events: Option<String>,
    /// Record only this process.
    #[arg(long, value_name = "PID", conflicts_with_all = ["exclude_pid", "all_pids"])]
    pub pid: Option<u32>,
    /// Record every process except this one.
    #[arg(long, value_name = "PID", conflicts_with = "all_pids")]
    pub exclude_pid: Option<u32>,
    /// Record every process (clears --pid / --exclude-pid).
    #[arg(long)]
    pub all_pids: bool,
}

#[derive(Debug, Args)]
pub struct Limit {
    /// Stop a live source after this many seconds (default: until Ctrl-C, or the end of the workload).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// A recording to read (same as --source file:INPUT).
    pub input: Option<PathBuf>,
    /// JSON lines, one object per event (same as --format json; fields in companion/README.md).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// The output format: table, json (lines) or csv.
    #[arg(long, value_enum, default_value_t = StreamFormat::Table)]
    pub format: StreamFormat,
    /// Only events of this process (repeat for several).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only files at or under this path, by whole components (/data/a: not /data/ab).
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Only these kinds, comma-separated (mmap,pagein,mnomap,file_mmap,open,close,path,proc,mark),
    /// or all. The table leaves out path and proc rows unless named here: each row names its file
    /// and process.
    #[arg(long, value_name = "LIST", value_parser = pipeline::parse_kinds)]
    pub kind: Option<maptrace_abi::EventMask>,
    /// No closing summary line.
    #[arg(long)]
    pub no_summary: bool,
    /// Times as seconds since boot (rel) or UTC (wall: needs a live source or a format 4 recording).
    #[arg(long, value_enum, value_name = "rel|wall", default_value_t = TimeArg::Rel)]
    pub time: TimeArg,
    #[command(flatten)]
    pub limit: Limit,
}

impl StreamArgs {
    /// The format asked for, `--json` included.
    pub fn format(&self) -> StreamFormat {
        if self.json {
            StreamFormat::Json
        } else {
            self.format
        }
    }
}

/// Checks a `--path` glob, keeping its text.
fn parse_glob(s: &str) -> Result<String, String> {
    report::filter::path_glob(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_page_size(s: &str) -> Result<PageSize, String> {
    s.parse()
        .map_err(|e: maptrace::pagesize::PageSizeError| e.to_string())
}

/// A `--since` / `--until` bound.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// Seconds after the trace's first record about a file.
    Secs(f64),
    /// A UTC time, as given and as nanoseconds since the Unix epoch.
    Utc(String, u64),
}

/// Parses seconds after the start of a trace (a number, 0 or more) or a
/// UTC time (RFC 3339).
fn parse_bound(s: &str) -> Result<Bound, String> {
    if let Some(v) = s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0) {
        return Ok(Bound::Secs(v));
    }
    maptrace::wallclock::parse_rfc3339(s)
        .map(|ns| Bound::Utc(s.to_string(), ns))
        .ok_or_else(|| {
            format!(
                "`{s}` is not a number of seconds, 0 or more (example: 2.5), \
                 nor a UTC time (RFC 3339, example: 2026-12-05T06:28:09Z)"
            )
        })
}

/// Ends the process as clap does for a bad command line (status 2), for
/// what only a check across flags can see.
pub fn usage_error(message: impl std::fmt::Display) -> ! {
    let args: Vec<OsString> = std::env::args_os().collect();
    command_for(&args)
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

/// Parses a non-negative number of seconds.
fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("`{s}` is not a number of seconds (example: 2.5)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own checks: no clashing flags, ids or value names.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The `--color` read ahead of clap: anywhere before `--`, the last
    /// valid one, and nothing from a value clap will refuse.
    #[test]
    fn the_colour_is_read_ahead_as_clap_will_parse_it() {
        let of = |args: &[&str]| {
            let args: Vec<OsString> = ["maptrace"]
                .iter()
                .chain(args)
                .map(OsString::from)
                .collect();
            colour_in(&args)
        };
        use ColorArg::{Always, Auto, Never};
        assert_eq!(of(&[]), None);
        assert_eq!(of(&["stream", "--help"]), None);
        assert_eq!(of(&["--color", "never", "--help"]), Some(Never));
        assert_eq!(of(&["stream", "--help", "--color=always"]), Some(Always));
        assert_eq!(
            of(&["--color=never", "stream", "--color", "auto"]),
            Some(Auto)
        );
        assert_eq!(
            of(&["--color=always", "stream", "--", "--color=never"]),
            Some(Always)
        );
        assert_eq!(of(&["stream", "--", "--color", "never"]), None);
        // The program's name is not an argument.
        let named: Vec<OsString> = ["--color=never"].map(OsString::from).to_vec();
        assert_eq!(colour_in(&named), None);
        for bad in [
            &["--color", "sometimes"][..],
            &["--color=Never"],
            &["--color="],
            &["--color"],
            &["--color", "--help"],
            &["--colour=never"],
        ] {
            assert_eq!(of(bad), None, "{bad:?}");
            // A bad one after a good one leaves the good one (clap refuses
            // the line either way).
            assert_eq!(
                of(&[&["--color=never"], bad].concat()),
                Some(Never),
                "{bad:?}"
            );
        }
        // A name that is not UTF-8 is no choice, and ends nothing.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let args = vec![
                OsString::from("maptrace"),
                OsString::from("--color"),
                OsString::from_vec(vec![0xff]),
                OsString::from("--color=never"),
            ];
            assert_eq!(colour_in(&args), Some(Never));
        }
    }

    /// Words of a shell line up to its first pipe, `'…'` quoting only (all
    /// the examples use).
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
        for c in line.chars() {
            match c {
                '\'' => (quoted, any) = (!quoted, true),
                '|' if !quoted => break,
                ' ' if !quoted => {
                    if any {
                        out.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                c => (cur, any) = (cur + &c.to_string(), true),
            }
        }
        if any {
            out.push(cur);
        }
        out
    }

    /// Every example a `--help` shows is a command line that parses, with
    /// every value accepted by its parser.
    #[test]
    fn every_help_example_parses() {
        let mut seen = 0;
        for block in [
            STREAM_EXAMPLES,
            RECORD_EXAMPLES,
            REPORT_EXAMPLES,
            HEATMAP_EXAMPLES,
        ] {
            for line in block.lines().skip(1) {
                let line = line.trim().trim_start_matches("sudo ");
                let args = words(line);
                assert_eq!(args.first().map(String::as_str), Some("maptrace"), "{line}");
                if let Err(e) = Cli::try_parse_from(&args) {
                    panic!("`{line}` does not parse: {e}");
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 10);
        assert_eq!(words("a 'b c'd | e"), ["a", "b cd"]);
    }
}
