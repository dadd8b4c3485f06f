//! `cargo xtask sign-check`: sign a real Mach-O bundle on Linux (ad hoc and with a PEM
//! certificate) and verify the signatures' structure, as a rehearsal of `sign`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::exec::{Cmd, Plan, Step};
use crate::kext::kernel::MACOS_MIN;
use crate::package::bundle::{self, KextPaths};
use crate::package::sign::{self, CS_ADHOC, SignMode};

/// A tiny C file, for the arm64 slice and when there are no x86_64 project objects yet.
const STANDIN_C: &str = "int mt_standin(int x) { return x + 1; }\n";

/// Inputs of the rehearsal.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    /// Working directory (`target/kext/sign-check`).
    pub dir: PathBuf,
    /// The rcodesign program.
    pub rcodesign: String,
    /// x86_64 objects and archives to link into the stand-in (the project's, when built).
    pub x86_inputs: Vec<PathBuf>,
    /// The filled Info.plist.
    pub info_plist: Vec<u8>,
}

impl Rehearsal {
    /// The ad hoc signed bundle.
    pub fn adhoc(&self) -> KextPaths {
        KextPaths::under(&self.dir.join("adhoc"))
    }

    /// The certificate-signed bundle.
    pub fn pem(&self) -> KextPaths {
        KextPaths::under(&self.dir.join("pem"))
    }

    fn cert_stem(&self) -> PathBuf {
        self.dir.join("selfsigned")
    }
}

/// lld's Mach-O linker: `-bundle -undefined dynamic_lookup` gives a signable image (not a kext;
/// docs/toolchain.md section 2), which is all signing needs.
fn lld(arch: &str, out: &Path, inputs: &[PathBuf]) -> Cmd {
    Cmd::new("ld64.lld-19")
        .args([
            "-arch",
            arch,
            "-platform_version",
            "macos",
            MACOS_MIN,
            MACOS_MIN,
        ])
        .args(["-bundle", "-undefined", "dynamic_lookup", "-o"])
        .path_arg(out)
        .args(inputs.iter().map(|p| p.display().to_string()))
}

fn clang_standin(target: &str, c: &Path, o: &Path) -> Cmd {
    Cmd::new("clang-19")
        .arg(format!("--target={target}"))
        .args(["-mkernel", "-O2", "-c"])
        .path_arg(c)
        .arg("-o")
        .path_arg(o)
}

/// The rehearsal plan: stand-in executables, universal binary, two bundles, two signatures.
pub fn plan(r: &Rehearsal) -> Plan {
    let d = &r.dir;
    let mut plan = Plan::new();
    plan.push(Step::RemoveDir(d.clone()));
    plan.push(Step::Write {
        path: d.join("standin.c"),
        contents: STANDIN_C.as_bytes().to_vec(),
    });
    let mut x86 = r.x86_inputs.clone();
    if x86.is_empty() {
        plan.push(Step::Note(
            "no x86_64 project objects: signing a stand-in C object".into(),
        ));
        plan.run(clang_standin(
            "x86_64-apple-macos11",
            &d.join("standin.c"),
            &d.join("standin.x86_64.o"),
        ));
        x86.push(d.join("standin.x86_64.o"));
    }
    // lld cannot link arm64e's authenticated relocations; a plain arm64 slice is enough here.
    plan.run(clang_standin(
        "arm64-apple-macos11",
        &d.join("standin.c"),
        &d.join("standin.arm64.o"),
    ));
    plan.run(lld("x86_64", &d.join("maptrace.x86_64"), &x86));
    plan.run(lld(
        "arm64",
        &d.join("maptrace.arm64"),
        &[d.join("standin.arm64.o")],
    ));
    let universal = d.join("maptrace.universal");
    plan.run(
        Cmd::new(&r.rcodesign)
            .args(["macho-universal-create", "--output"])
            .path_arg(&universal)
            .path_arg(&d.join("maptrace.x86_64"))
            .path_arg(&d.join("maptrace.arm64")),
    );
    plan.extend(bundle::plan(
        &r.adhoc(),
        r.info_plist.clone(),
        Some(&universal),
    ));
    plan.extend(sign::plan(
        &SignMode::AdHoc,
        &r.adhoc().bundle,
        &r.rcodesign,
        false,
    ));
    plan.run(
        Cmd::new(&r.rcodesign)
            .args([
                "generate-self-signed-certificate",
                "--person-name",
                "maptrace sign-check",
            ])
            .arg("--pem-filename")
            .path_arg(&r.cert_stem()),
    );
    plan.extend(bundle::plan(
        &r.pem(),
        r.info_plist.clone(),
        Some(&universal),
    ));
    let pem = SignMode::Pem {
        cert: r.cert_stem().with_extension("crt"),
        key: r.cert_stem().with_extension("key"),
    };
    // No timestamp server: CI machines cannot reach Apple's.
    plan.extend(sign::plan(&pem, &r.pem().bundle, &r.rcodesign, true));
    plan
}

/// Verifies both bundles after the plan ran; returns a summary.
pub fn verify(r: &Rehearsal, bundle_id: &str) -> Result<String> {
    let mut summary = String::new();
    for (name, paths, adhoc) in [("ad hoc", r.adhoc(), true), ("PEM", r.pem(), false)] {
        let slices = sign::verify_bundle(&paths.bundle, bundle::EXECUTABLE)?;
        if slices.len() != 2 {
            bail!("{name}: expected 2 signed slices, found {}", slices.len());
        }
        for s in &slices {
            if s.identifier != bundle_id {
                bail!(
                    "{name}: identifier {} is not the bundle id {bundle_id}",
                    s.identifier
                );
            }
            if (s.flags & CS_ADHOC != 0) != adhoc || s.has_cms == adhoc {
                bail!(
                    "{name}: flags {:#x}, CMS signature {}: not a {name} signature",
                    s.flags,
                    s.has_cms
                );
            }
        }
        summary.push_str(&format!(
            "{name}: {} slices signed as {bundle_id}, {} code pages verified\n",
            slices.len(),
            slices.iter().map(|s| s.code_slots).sum::<u32>()
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rehearsal(x86: Vec<PathBuf>) -> Rehearsal {
        Rehearsal {
            dir: "/r/target/kext/sign-check".into(),
            rcodesign: "rcodesign".into(),
            x86_inputs: x86,
            info_plist: b"<plist/>".to_vec(),
        }
    }

    #[test]
    fn plan_signs_two_bundles_built_around_one_universal_binary() {
        let p = plan(&rehearsal(vec![
            "/r/target/kext/x86_64/libmaptrace_core.a".into(),
        ]));
        let text = p.render();
        assert!(
            !text.contains("standin.x86_64.o"),
            "project objects replace the stand-in"
        );
        assert!(
            text.contains("ld64.lld-19 -arch x86_64 -platform_version macos 11.0 11.0 -bundle")
        );
        assert!(text.contains("/r/target/kext/x86_64/libmaptrace_core.a"));
        assert!(text.contains("rcodesign macho-universal-create"));
        assert!(text.contains("rcodesign sign /r/target/kext/sign-check/adhoc/maptrace.kext"));
        assert!(text.contains("--timestamp-url none /r/target/kext/sign-check/pem/maptrace.kext"));
        let written: Vec<_> = p.written_files().map(Path::to_path_buf).collect();
        for f in ["adhoc", "pem"] {
            let exe = PathBuf::from(format!(
                "/r/target/kext/sign-check/{f}/maptrace.kext/Contents/MacOS/maptrace"
            ));
            assert!(written.contains(&exe), "{exe:?} not written");
        }
    }

    #[test]
    fn without_project_objects_a_stand_in_is_compiled() {
        let text = plan(&rehearsal(Vec::new())).render();
        assert!(text.contains("--target=x86_64-apple-macos11 -mkernel -O2 -c"));
        assert!(text.contains("standin.x86_64.o"));
    }
}
