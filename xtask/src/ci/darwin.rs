//! The companion a user installs on a Mac must compile for it. The host tests build it for
//! Linux only, so a macOS-only code path (the real sysctl source) could rot unseen: this step
//! type-checks it for both Mac architectures with the nightly toolchain's `-Zbuild-std` (no
//! prebuilt std for apple targets is installed here). The Linux host has no macOS SDK headers,
//! hence `-ffreestanding` for bindgen; the default features only (PNG output, no simulator), as in a
//! user's build.

use anyhow::Result;

use crate::exec::{Ctx, Plan, ensure_components, exec, nightly_cargo};

/// The Mac targets the companion ships for.
pub const TARGETS: [&str; 2] = ["aarch64-apple-darwin", "x86_64-apple-darwin"];

/// `cargo check` of the companion for each Mac target.
fn plan(ctx: &Ctx) -> Plan {
    let mut plan = Plan::new();
    for target in TARGETS {
        plan.run(
            nightly_cargo(ctx, "target/darwin")
                .args([
                    "check",
                    "--locked",
                    "-Zbuild-std=std,panic_abort",
                    "--target",
                    target,
                    "-p",
                    "maptrace",
                ])
                .env("BINDGEN_EXTRA_CLANG_ARGS", "-ffreestanding"),
        );
    }
    plan
}

/// The CI step: installs `rust-src` for `-Zbuild-std`, then checks both targets.
pub fn step_companion_check(ctx: &Ctx) -> Result<()> {
    ensure_components(&["rust-src"], ctx.mode)?;
    exec(&plan(ctx), ctx.mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Mode;

    #[test]
    fn checks_the_companion_without_the_simulator_for_both_macs() {
        let ctx = Ctx {
            root: std::env::temp_dir(),
            mode: Mode::DryRun,
        };
        let text = plan(&ctx).render();
        assert_eq!(plan(&ctx).commands().count(), TARGETS.len(), "{text}");
        for line in text.lines() {
            // A user's build: the default features (PNG output), no simulator.
            assert!(!line.contains("--no-default-features"), "{line}");
            assert!(!line.contains("--features"), "{line}");
            for flag in [
                "-p maptrace",
                "-Zbuild-std=std,panic_abort",
                "BINDGEN_EXTRA_CLANG_ARGS=-ffreestanding",
                "target/darwin",
            ] {
                assert!(line.contains(flag), "{flag} missing: {line}");
            }
        }
        for target in TARGETS {
            assert!(text.contains(&format!("--target {target}")), "{text}");
        }
    }
}
