//! What `cargo xtask test` runs (.ci/run): the steps, the sanitizers, fuzzing, the companion's
//! macOS check and repository hygiene.

pub mod darwin;
pub mod fuzz;
pub mod sanitize;
pub mod steps;
mod tidy;
