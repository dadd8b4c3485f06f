//! `maptrace stream`: events as they happen, as a table or JSON lines.

use super::read::for_each_batch;
use super::source::open_source;
use crate::cli::StreamArgs;
use anyhow::Result;
use maptrace::output;
use maptrace::pipeline::{Filter, Item, Totals};
use maptrace::source::Source;
use std::io::Write;

pub fn run(source: Option<&str>, a: &StreamArgs, out: &mut impl Write) -> Result<u8> {
    let mut src = open_source(source, a.input.as_deref())?;
    let t = stream(src.as_mut(), a, out)?;
    Ok(t.exit_status())
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
