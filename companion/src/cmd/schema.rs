//! `maptrace schema`: the JSON Schema of `stream --json` lines, or of the
//! `report --json` document.

use crate::cli::{SchemaArgs, SchemaOf};
use anyhow::Result;
use maptrace::{contract, exit, report};
use std::io::Write;

pub fn run(a: &SchemaArgs, out: &mut impl Write) -> Result<u8> {
    let text = match a.of {
        SchemaOf::Events => contract::schema_text(),
        SchemaOf::Report => report::schema_text(),
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(exit::OK)
}
