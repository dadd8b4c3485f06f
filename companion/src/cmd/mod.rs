//! What each subcommand does, one module a command, over the library's
//! sources, pipeline and renderers. `read` and `source` are what they share.

pub mod completions;
pub mod config;
pub mod demo;
pub mod export;
pub mod heatmap;
pub mod info;
pub mod man;
mod read;
pub mod record;
pub mod report;
pub mod schema;
mod source;
pub mod stats;
pub mod stream;
