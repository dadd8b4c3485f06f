//! `maptrace`: watch how files are mapped and paged in, from the kext on
//! macOS, from the XNU simulator anywhere, or from a recording.
//!
//! This file only parses the command line (`cli`) and hands each command to
//! its module in `cmd/`.

mod cli;
mod cmd;

use anyhow::Result;
use cli::{Cli, Command, ConfigAction};
use maptrace::exit;
use maptrace::palette::Palette;
use std::io::{self, BufWriter};
use std::process::ExitCode;

fn run(cli: Cli) -> Result<u8> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let source = cli.source.as_deref();
    // Decided once, for the outputs people read; the others take none.
    let palette = Palette::for_stdout(cli.color.into());
    match &cli.command {
        Command::Demo(a) => cmd::demo::run(source, a, &palette, &mut out),
        Command::Stream(a) => cmd::stream::run(source, a, &palette, &mut out),
        Command::Record(a) => cmd::record::run(source, a),
        Command::Report(a) => cmd::report::run(source, a, &palette, &mut out),
        Command::Stats(a) => cmd::stats::run(source, a, &palette, &mut out),
        Command::Info(a) => cmd::info::run(a, &palette, &mut out),
        Command::Config {
            action: ConfigAction::Show(a),
        } => cmd::config::show(source, a, &mut out),
        Command::Config {
            action: ConfigAction::Set(a),
        } => cmd::config::set(source, a, &mut out),
        Command::Export(a) => cmd::export::run(source, a, &mut out),
        Command::Heatmap(a) => cmd::heatmap::run(source, a, &mut out),
        Command::Schema(a) => cmd::schema::run(a, &mut out),
        Command::Completions(a) => cmd::completions::run(a, &mut out),
        Command::Man(a) => cmd::man::run(a, &mut out),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_coloured();
    let stderr = Palette::for_stderr(cli.color.into());
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed pipe (`maptrace stream | head`) is the reader's choice.
            if e.downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::from(exit::OK);
            }
            let error = stderr.error;
            eprintln!("maptrace: {error}error:{error:#} {e:#}");
            if e.downcast_ref::<exit::UsageError>().is_some() {
                eprintln!("For more information, try '--help'.");
                return ExitCode::from(exit::USAGE);
            }
            ExitCode::from(exit::ERROR)
        }
    }
}
