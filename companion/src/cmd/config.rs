//! `maptrace config show` and `config set`: what the kext records.

use super::source::open_source;
use crate::cli::{JsonArgs, SetArgs};
use anyhow::{Result, anyhow};
use maptrace::control::{self, ConfigChange, PidFilter};
use maptrace::{exit, pipeline};
use std::io::Write;

pub fn show(source: Option<&str>, a: &JsonArgs, mut out: &mut impl Write) -> Result<u8> {
    let mut src = open_source(source, None)?;
    let v = control::view(&src.config()?);
    if a.json {
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        control::write_config(&mut out, &v)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

pub fn set(source: Option<&str>, a: &SetArgs, mut out: &mut impl Write) -> Result<u8> {
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
            .map_err(|e| exit::usage(format!("--events: {e}")))?,
        pid: match (a.pid, a.exclude_pid, a.all_pids) {
            (Some(p), _, _) => Some(Some(PidFilter::Only(p))),
            (_, Some(p), _) => Some(Some(PidFilter::Exclude(p))),
            (_, _, true) => Some(None),
            _ => None,
        },
    };
    if change == ConfigChange::default() {
        return Err(exit::usage(
            "nothing to change: give --enable, --disable, --events LIST, --pid N, --exclude-pid N or --all-pids",
        ));
    }
    let mut src = open_source(source, None)?;
    let new = control::apply(&src.config()?, &change).map_err(|e| anyhow!(e))?;
    src.set_config(&new)?;
    control::write_config(&mut out, &control::view(&src.config()?))?;
    out.flush()?;
    if !src.config_persists() {
        eprintln!(
            "maptrace: note: {} runs only for this command, so this config ends with it; \
             the kext keeps its config between commands (--source sysctl, on macOS)",
            src.describe()
        );
    }
    Ok(exit::OK)
}
