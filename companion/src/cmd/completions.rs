//! `maptrace completions SHELL`: the shell's completion script, generated
//! from the same command line definition clap parses.

use crate::cli::{Cli, CompletionsArgs};
use anyhow::Result;
use clap::CommandFactory;
use maptrace::exit;
use std::io::Write;

pub fn run(a: &CompletionsArgs, out: &mut impl Write) -> Result<u8> {
    clap_complete::generate(a.shell, &mut Cli::command(), "maptrace", out);
    out.flush()?;
    Ok(exit::OK)
}
