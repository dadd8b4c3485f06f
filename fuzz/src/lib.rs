//! What the fuzz targets share: how one input is cut into batches, the
//! oracles each target checks, the config sysctl harness on the simulator,
//! and the seed corpus (real batches from the real shim and core).

pub mod batches;
pub mod config;
pub mod outputs;
pub mod recording;
pub mod scenario;
pub mod seeds;

/// The shim test harness (boot, load, sysctl helpers), shared with
/// the system tests (`system-tests/`) rather than copied.
#[path = "../../system-tests/src/lib.rs"]
#[allow(missing_docs, reason = "a test helper module")]
pub mod shim_support;
