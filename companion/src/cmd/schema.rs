//! `maptrace schema`: the JSON Schema of `stream --json` lines.

use anyhow::Result;
use maptrace::{contract, exit};
use std::io::Write;

pub fn run(out: &mut impl Write) -> Result<u8> {
    out.write_all(contract::schema_text().as_bytes())?;
    out.flush()?;
    Ok(exit::OK)
}
