//! `cargo xtask bundle`: Info.plist from the template, and the `.kext` directory layout.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plist::{Dictionary, Value};

use crate::exec::{Cmd, Plan, Step};
use crate::kext::kernel::Variant;

/// The Info.plist template, relative to the repository root.
pub const TEMPLATE: &str = "Info.plist";
/// The kauth variant's template (macOS 10.15 test VMs).
pub const TEMPLATE_KAUTH: &str = "Info.kauth.plist";

/// The template of `variant`.
pub fn template(variant: Variant) -> &'static str {
    if variant.kauth {
        TEMPLATE_KAUTH
    } else {
        TEMPLATE
    }
}
/// The kext's executable name (`Contents/MacOS/<name>`) and bundle name.
pub const EXECUTABLE: &str = "maptrace";
/// The header that defines `MT_BUNDLE_ID`.
pub const ABI_HEADER: &str = "kext-shim/include/maptrace_abi.h";

/// What goes into Info.plist besides the template's fixed keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// CFBundleIdentifier (from `MT_BUNDLE_ID`).
    pub bundle_id: String,
    /// CFBundleVersion and CFBundleShortVersionString (from Cargo.toml).
    pub version: String,
    /// OSBundleLibraries: bundle -> minimum version.
    pub libraries: BTreeMap<String, String>,
    /// LSMinimumSystemVersion.
    pub macos_min: String,
}

/// Reads `#define MT_BUNDLE_ID "..."` from the ABI header text.
pub fn bundle_id_from_header(header: &str) -> Result<String> {
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("#define") && words.next() == Some("MT_BUNDLE_ID") {
            let rest: String = words.collect::<Vec<_>>().join(" ");
            let id = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(id, _)| id)
                .with_context(|| format!("MT_BUNDLE_ID is not a string literal: {rest}"))?;
            let valid = !id.is_empty()
                && id.split('.').count() >= 2
                && id.split('.').all(|p| {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                bail!("MT_BUNDLE_ID `{id}` is not a reverse-DNS bundle identifier");
            }
            return Ok(id.to_string());
        }
    }
    bail!("no `#define MT_BUNDLE_ID` in {ABI_HEADER}")
}

/// The version of `package` from `cargo metadata --format-version 1` output; kext versions are
/// numeric (`1.2.3`), so pre-release or build suffixes are refused.
pub fn version_from_metadata(metadata: &[u8], package: &str) -> Result<String> {
    let meta: serde_json::Value =
        serde_json::from_slice(metadata).context("cargo metadata: not JSON")?;
    let version = meta["packages"]
        .as_array()
        .and_then(|pkgs| pkgs.iter().find(|p| p["name"] == package))
        .and_then(|p| p["version"].as_str())
        .with_context(|| format!("cargo metadata has no package {package}"))?;
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("version {version} of {package} is not a plain MAJOR.MINOR.PATCH kext version");
    }
    Ok(version.to_string())
}

/// True when a string still looks like a template placeholder (`__NAME__`).
fn is_placeholder(s: &str) -> bool {
    s.len() > 4 && s.starts_with("__") && s.ends_with("__")
}

fn find_placeholder(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) if is_placeholder(s) => Some(format!("{path} = {s}")),
        Value::Dictionary(d) => d
            .iter()
            .find_map(|(k, v)| find_placeholder(v, &format!("{path}/{k}"))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_placeholder(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Fills the template: identity, versions, executable, package type, OSBundleLibraries.
/// Fails when the template is not a dictionary or a placeholder is left unfilled.
pub fn fill_info_plist(template: &[u8], info: &Info) -> Result<Vec<u8>> {
    let mut value: Value =
        plist::from_bytes(template).context("Info.plist template is not a plist")?;
    let dict = value
        .as_dictionary_mut()
        .context("Info.plist template is not a dictionary")?;
    let mut set = |k: &str, v: &str| dict.insert(k.to_string(), Value::String(v.to_string()));
    set("CFBundleIdentifier", &info.bundle_id);
    set("CFBundleExecutable", EXECUTABLE);
    set("CFBundleName", EXECUTABLE);
    set("CFBundlePackageType", "KEXT");
    set("CFBundleVersion", &info.version);
    set("CFBundleShortVersionString", &info.version);
    set("LSMinimumSystemVersion", &info.macos_min);
    let libs: Dictionary = info
        .libraries
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    dict.insert("OSBundleLibraries".into(), Value::Dictionary(libs));
    if let Some(left) = find_placeholder(&value, "") {
        bail!("Info.plist template placeholder left unfilled: {left}");
    }
    let mut out = Vec::new();
    value
        .to_writer_xml(&mut out)
        .context("serialising Info.plist")?;
    out.push(b'\n');
    Ok(out)
}

/// The `.kext` bundle's paths.
#[derive(Debug, Clone)]
pub struct KextPaths {
    /// `<dir>/maptrace.kext`.
    pub bundle: PathBuf,
}

impl KextPaths {
    /// The bundle under `dir`.
    pub fn under(dir: &Path) -> Self {
        Self {
            bundle: dir.join(format!("{EXECUTABLE}.kext")),
        }
    }

    /// `Contents/Info.plist`.
    pub fn info_plist(&self) -> PathBuf {
        self.bundle.join("Contents/Info.plist")
    }

    /// `Contents/MacOS/maptrace`.
    pub fn executable(&self) -> PathBuf {
        self.bundle.join("Contents/MacOS").join(EXECUTABLE)
    }
}

/// The plan writing the bundle: a fresh tree, Info.plist, and the executable when there is one.
pub fn plan(paths: &KextPaths, info_plist: Vec<u8>, executable: Option<&Path>) -> Plan {
    let mut plan = Plan::new();
    // A stale signature or executable must not survive into the new bundle.
    plan.push(Step::RemoveDir(paths.bundle.clone()));
    plan.push(Step::MkDir(paths.bundle.join("Contents/MacOS")));
    plan.push(Step::Write {
        path: paths.info_plist(),
        contents: info_plist,
    });
    match executable {
        Some(exe) => plan.push(Step::Copy {
            from: exe.to_path_buf(),
            to: paths.executable(),
        }),
        None => plan.push(Step::Note(
            "no linked executable: the final link runs on macOS (`cargo xtask build`)".into(),
        )),
    }
    plan
}

/// Gathers the Info inputs from the repository: header, cargo metadata, the objects' imports.
pub fn gather_info(
    root: &Path,
    variant: Variant,
    libraries: BTreeMap<String, String>,
) -> Result<Info> {
    let header_path = root.join(ABI_HEADER);
    let header = fs::read_to_string(&header_path)
        .with_context(|| format!("read {}", header_path.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata = Cmd::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .path_arg(&root.join("Cargo.toml"))
        .output()?;
    Ok(Info {
        // MT_KMOD_ID in kext-shim/src/mt_shim.h carries the same suffix.
        bundle_id: bundle_id_from_header(&header)? + variant.bundle_id_suffix(),
        version: version_from_metadata(&metadata, "maptrace-core")?,
        libraries,
        macos_min: variant.macos_min().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn info() -> Info {
        Info {
            bundle_id: "org.example.kext".into(),
            version: "1.2.3".into(),
            libraries: crate::kext::kpi::libraries(["com.apple.kpi.bsd", "com.apple.kpi.libkern"]),
            macos_min: crate::kext::kernel::MACOS_MIN.into(),
        }
    }

    #[test]
    fn bundle_id_comes_from_the_abi_header() {
        let header = fs::read_to_string(root().join(ABI_HEADER)).unwrap();
        let id = bundle_id_from_header(&header).unwrap();
        assert!(header.contains(&format!("\"{id}\"")));
        assert_eq!(
            bundle_id_from_header("#define  MT_BUNDLE_ID   \"a.b-c.d\" /* x */").unwrap(),
            "a.b-c.d"
        );
        for bad in [
            "",
            "#define MT_BUNDLE_ID org.x",
            "#define MT_BUNDLE_ID \"nodots\"",
            "#define MT_BUNDLE_ID \"a..b\"",
            "#define MT_BUNDLE_ID \"a.b c\"",
        ] {
            assert!(bundle_id_from_header(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn version_comes_from_metadata_and_must_be_numeric() {
        let meta = br#"{"packages":[{"name":"other","version":"9.9.9"},{"name":"maptrace-core","version":"0.4.1"}]}"#;
        assert_eq!(
            version_from_metadata(meta, "maptrace-core").unwrap(),
            "0.4.1"
        );
        assert!(version_from_metadata(meta, "missing").is_err());
        let pre = br#"{"packages":[{"name":"maptrace-core","version":"1.0.0-rc.1"}]}"#;
        assert!(version_from_metadata(pre, "maptrace-core").is_err());
        assert!(version_from_metadata(b"{", "maptrace-core").is_err());
    }

    #[test]
    fn the_project_template_fills_completely() {
        let template = fs::read(root().join(TEMPLATE)).unwrap();
        let out = fill_info_plist(&template, &info()).unwrap();
        let v: Value = plist::from_bytes(&out).unwrap();
        let d = v.as_dictionary().unwrap();
        let s = |k: &str| d.get(k).and_then(Value::as_string).unwrap().to_string();
        assert_eq!(s("CFBundleIdentifier"), "org.example.kext");
        assert_eq!(s("CFBundleExecutable"), EXECUTABLE);
        assert_eq!(s("CFBundlePackageType"), "KEXT");
        assert_eq!(s("CFBundleVersion"), "1.2.3");
        assert_eq!(s("CFBundleShortVersionString"), "1.2.3");
        let libs = d
            .get("OSBundleLibraries")
            .and_then(Value::as_dictionary)
            .unwrap();
        assert_eq!(libs.len(), 2);
        assert_eq!(
            libs.get("com.apple.kpi.bsd").and_then(Value::as_string),
            Some("20.0")
        );
        // A tracer is not needed to boot or to recover a machine: no OSBundleRequired.
        assert!(d.get("OSBundleRequired").is_none());
    }

    #[test]
    fn the_kauth_template_fills_for_macos_10_15() {
        let kauth = Variant {
            kauth: true,
            resident: false,
        };
        let template = fs::read(root().join(template(kauth))).unwrap();
        let info = Info {
            bundle_id: "org.maptrace.kext.kauth".into(),
            libraries: crate::kext::kpi::libraries_for(kauth.macos_min(), ["com.apple.kpi.bsd"]),
            macos_min: kauth.macos_min().into(),
            ..info()
        };
        let out = fill_info_plist(&template, &info).unwrap();
        let v: Value = plist::from_bytes(&out).unwrap();
        let d = v.as_dictionary().unwrap();
        let s = |k: &str| d.get(k).and_then(Value::as_string).unwrap().to_string();
        assert_eq!(s("CFBundleIdentifier"), "org.maptrace.kext.kauth");
        assert_eq!(s("LSMinimumSystemVersion"), "10.15");
        let libs = d
            .get("OSBundleLibraries")
            .and_then(Value::as_dictionary)
            .unwrap();
        assert_eq!(
            libs.get("com.apple.kpi.bsd").and_then(Value::as_string),
            Some("19.0")
        );
        // The shim's kmod_info name must be the same bundle id (KMOD_EXPLICIT_DECL).
        let shim = fs::read_to_string(root().join("kext-shim/src/mt_shim.h")).unwrap();
        assert!(shim.contains("#define MT_KMOD_ID org.maptrace.kext.kauth"));
        assert!(shim.contains("#define MT_KMOD_ID org.maptrace.kext\n"));
        let header = fs::read_to_string(root().join(ABI_HEADER)).unwrap();
        assert_eq!(bundle_id_from_header(&header).unwrap(), "org.maptrace.kext");
    }

    #[test]
    fn unknown_placeholders_and_non_dictionaries_are_refused() {
        let t = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Extra</key><array><string>__TEAM__</string></array></dict></plist>"#;
        let err = fill_info_plist(t, &info()).unwrap_err().to_string();
        assert!(err.contains("/Extra[0] = __TEAM__"), "{err}");
        let arr = br#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><array/></plist>"#;
        assert!(fill_info_plist(arr, &info()).is_err());
        assert!(fill_info_plist(b"not a plist", &info()).is_err());
    }

    #[test]
    fn plan_writes_the_kext_layout() {
        let paths = KextPaths::under(Path::new("/repo/target/kext"));
        let with = plan(
            &paths,
            b"x".to_vec(),
            Some(Path::new("/repo/target/kext/maptrace")),
        );
        let files: Vec<_> = with.written_files().collect();
        assert_eq!(
            files,
            [
                Path::new("/repo/target/kext/maptrace.kext/Contents/Info.plist"),
                Path::new("/repo/target/kext/maptrace.kext/Contents/MacOS/maptrace"),
            ]
        );
        assert!(matches!(&with.steps[0], Step::RemoveDir(p) if p.ends_with("maptrace.kext")));
        let without = plan(&paths, b"x".to_vec(), None);
        assert_eq!(without.written_files().count(), 1);
        assert!(without.render().contains("cargo xtask build"));
    }
}
