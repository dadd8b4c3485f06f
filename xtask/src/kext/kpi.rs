//! The project's table of imported KPI symbols: resolving imports to bundles, and OSBundleLibraries.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::kext::kernel::Arch;
#[cfg(test)]
use crate::kext::kernel::MACOS_MIN;

/// The table, relative to the repository root.
pub const TABLE: &str = "kext-shim/kpi/symbols.tsv";
/// KPIs the default kext must not import, relative to the repository root.
pub const UNSUPPORTED: &str = "kext-shim/kpi/unsupported.tsv";

/// The bundles a third-party kext may link against.
pub const PUBLIC_BUNDLES: [&str; 6] = [
    "com.apple.kpi.bsd",
    "com.apple.kpi.dsep",
    "com.apple.kpi.iokit",
    "com.apple.kpi.libkern",
    "com.apple.kpi.mach",
    "com.apple.kpi.unsupported",
];

/// What a symbol is; a data relocation to a function matters on arm64e, to data it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A function.
    Func,
    /// A data object (vnode-op descriptors, sysctl parents).
    Data,
}

/// One row: `symbol arch bundle kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Mach-O symbol name, with the leading underscore.
    pub symbol: String,
    /// `any`, `x86_64` or `arm64`.
    pub arch: String,
    /// The exporting bundle.
    pub bundle: String,
    /// Function or data.
    pub kind: Kind,
}

impl Entry {
    fn applies_to(&self, arch: Arch) -> bool {
        self.arch == "any" || self.arch == arch.kpi_arch()
    }
}

/// One row of the unsupported-KPI list: `symbol arch allowed_in source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// Mach-O symbol name, with the leading underscore.
    pub symbol: String,
    /// `any`, `x86_64` or `arm64`.
    pub arch: String,
    /// The kauth variant (macOS 10.15) may import it.
    pub kauth_variant_ok: bool,
    /// Why it is on the list (Apple's page, the XNU header marking).
    pub source: String,
}

impl Unsupported {
    fn applies_to(&self, arch: Arch) -> bool {
        self.arch == "any" || self.arch == arch.kpi_arch()
    }
}

/// Parses the unsupported-KPI list.
pub fn parse_unsupported(text: &str) -> Result<Vec<Unsupported>> {
    let mut out: Vec<Unsupported> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [symbol, arch, allowed, source] = cols[..] else {
            bail!("{UNSUPPORTED}:{}: expected 4 tab-separated columns", n + 1);
        };
        if !symbol.starts_with('_') || !["any", "x86_64", "arm64"].contains(&arch) {
            bail!(
                "{UNSUPPORTED}:{}: bad symbol `{symbol}` or arch `{arch}`",
                n + 1
            );
        }
        let kauth_variant_ok = match allowed {
            "kauth-variant" => true,
            "none" => false,
            other => bail!(
                "{UNSUPPORTED}:{}: allowed_in `{other}` is not kauth-variant or none",
                n + 1
            ),
        };
        if source.trim().is_empty() {
            bail!("{UNSUPPORTED}:{}: `{symbol}` names no source", n + 1);
        }
        if out.iter().any(|u| u.symbol == symbol) {
            bail!("{UNSUPPORTED}:{}: `{symbol}` is listed twice", n + 1);
        }
        out.push(Unsupported {
            symbol: symbol.to_string(),
            arch: arch.to_string(),
            kauth_variant_ok,
            source: source.to_string(),
        });
    }
    Ok(out)
}

/// The parsed table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Rows in file order.
    pub entries: Vec<Entry>,
    /// KPIs the default kext must not import ([`UNSUPPORTED`]).
    pub unsupported: Vec<Unsupported>,
}

impl Table {
    /// Parses the TSV text; rejects malformed rows, private or unknown bundles and duplicates.
    pub fn parse(text: &str) -> Result<Self> {
        let mut entries: Vec<Entry> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let [symbol, arch, bundle, kind] = cols[..] else {
                bail!("{TABLE}:{}: expected 4 tab-separated columns", n + 1);
            };
            if !symbol.starts_with('_') {
                bail!(
                    "{TABLE}:{}: `{symbol}` lacks the Mach-O leading underscore",
                    n + 1
                );
            }
            if !["any", "x86_64", "arm64"].contains(&arch) {
                bail!(
                    "{TABLE}:{}: arch `{arch}` is not any, x86_64 or arm64",
                    n + 1
                );
            }
            if !PUBLIC_BUNDLES.contains(&bundle) {
                bail!(
                    "{TABLE}:{}: `{bundle}` is not a public KPI bundle (a kext cannot link it)",
                    n + 1
                );
            }
            let kind = match kind {
                "func" => Kind::Func,
                "data" => Kind::Data,
                other => bail!("{TABLE}:{}: kind `{other}` is not func or data", n + 1),
            };
            let clash = entries.iter().any(|e| {
                e.symbol == symbol && (e.arch == arch || e.arch == "any" || arch == "any")
            });
            if clash {
                bail!("{TABLE}:{}: `{symbol}` is listed twice for {arch}", n + 1);
            }
            entries.push(Entry {
                symbol: symbol.to_string(),
                arch: arch.to_string(),
                bundle: bundle.to_string(),
                kind,
            });
        }
        Ok(Self {
            entries,
            unsupported: Vec::new(),
        })
    }

    /// Reads the table and the unsupported-KPI list (when present) from the repository.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(TABLE);
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut table = Self::parse(&text)?;
        let path = root.join(UNSUPPORTED);
        if path.is_file() {
            let text =
                fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            table.unsupported = parse_unsupported(&text)?;
        }
        Ok(table)
    }

    /// The unsupported-KPI row for `symbol` on `arch`.
    pub fn unsupported(&self, symbol: &str, arch: Arch) -> Option<&Unsupported> {
        self.unsupported
            .iter()
            .find(|u| u.symbol == symbol && u.applies_to(arch))
    }

    /// The row for `symbol` on `arch`.
    pub fn lookup(&self, symbol: &str, arch: Arch) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.symbol == symbol && e.applies_to(arch))
    }
}

/// The minimum bundle version: the Darwin version of `MACOS_MIN` (macOS 11 is Darwin 20).
#[cfg(test)]
pub fn bundle_version() -> String {
    bundle_version_for(MACOS_MIN)
}

/// The Darwin version of a macOS version: 10.15 is Darwin 19, 11 is Darwin 20.
pub fn bundle_version_for(macos: &str) -> String {
    let mut parts = macos.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(11);
    let minor = parts.next().unwrap_or(0);
    let darwin = if major == 10 { minor + 4 } else { major + 9 };
    format!("{darwin}.0")
}

/// OSBundleLibraries for a set of bundles: each at `bundle_version()`.
#[cfg(test)]
pub fn libraries<'a>(bundles: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    libraries_for(MACOS_MIN, bundles)
}

/// OSBundleLibraries for a set of bundles, each at the Darwin version of `macos`.
pub fn libraries_for<'a>(
    macos: &str,
    bundles: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, String> {
    bundles
        .into_iter()
        .map(|b| (b.to_string(), bundle_version_for(macos)))
        .collect()
}

/// XNU's export tables, kept in the repo (`kext-shim/kpi/xnu/`, see its README): one per
/// supported macOS extreme, the newest first. A kext can import a symbol only if it is listed.
pub const REFERENCE_TABLES: [&str; 2] = [
    "kext-shim/kpi/xnu/symbol_bundles.xnu-11417.101.15.tsv",
    "kext-shim/kpi/xnu/symbol_bundles.xnu-7195.141.2.tsv",
];

/// Checks the project's KPI table against every XNU export table in the repo.
/// A missing table is an error, never a skipped check.
pub fn check_against_references(root: &Path, table: &Table) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for file in REFERENCE_TABLES {
        let path = root.join(file);
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        problems.extend(
            check_against_reference(table, &text)
                .into_iter()
                .map(|p| format!("{file}: {p}")),
        );
    }
    Ok(problems)
}

/// Checks every table row against an XNU export table (`symbol arch bundle source alias`):
/// the symbol must be exported by the same bundle for every arch the row claims.
pub fn check_against_reference(table: &Table, reference: &str) -> Vec<String> {
    // (symbol or prefix, arch) -> bundles
    let mut exact: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    let mut prefixes: Vec<(&str, &str, &str)> = Vec::new();
    for line in reference.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(sym), Some(arch), Some(bundle)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        if let Some(prefix) = sym.strip_suffix('*') {
            prefixes.push((prefix, arch, bundle));
        } else {
            exact.entry((sym, arch)).or_default().insert(bundle);
        }
    }
    let exported = |sym: &str, arch: &str, bundle: &str| {
        let hit = |a: &str| {
            exact.get(&(sym, a)).is_some_and(|b| b.contains(bundle))
                || prefixes
                    .iter()
                    .any(|(p, pa, pb)| sym.starts_with(p) && *pa == a && *pb == bundle)
        };
        hit("any") || hit(arch)
    };
    let mut problems = Vec::new();
    for e in &table.entries {
        let archs: Vec<&str> = if e.arch == "any" {
            vec!["x86_64", "arm64"]
        } else {
            vec![e.arch.as_str()]
        };
        for arch in archs {
            if !exported(&e.symbol, arch, &e.bundle) {
                problems.push(format!(
                    "{} ({arch}) is not exported by {} in the reference table",
                    e.symbol, e.bundle
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn project_table_parses_and_has_no_private_symbols() {
        let table = Table::load(&root()).unwrap();
        assert!(table.entries.len() > 20);
        assert_eq!(
            table.lookup("_IOLog", Arch::Arm64e).unwrap().bundle,
            "com.apple.kpi.iokit"
        );
        assert!(table.lookup("_cpu_number", Arch::X86_64).is_some());
        // Private on arm64: must not resolve there.
        assert!(table.lookup("_cpu_number", Arch::Arm64e).is_none());
        assert!(table.lookup("_vnode_usecount", Arch::X86_64).is_none());
        assert_eq!(
            table.lookup("_vnop_mmap_desc", Arch::X86_64).unwrap().kind,
            Kind::Data
        );
    }

    #[test]
    fn project_table_matches_the_xnu_reference_tables() {
        let table = Table::load(&root()).unwrap();
        let problems = check_against_references(&root(), &table).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_missing_reference_table_is_an_error() {
        let table = Table::load(&root()).unwrap();
        let empty = std::env::temp_dir().join("maptrace-no-reference-tables");
        let err = check_against_references(&empty, &table).unwrap_err();
        assert!(format!("{err:#}").contains("symbol_bundles"), "{err:#}");
    }

    #[test]
    fn reference_check_catches_wrong_bundle_arch_and_private() {
        let reference = "# header\n\
            _a\tany\tcom.apple.kpi.bsd\tf\t\n\
            _b\tx86_64\tcom.apple.kpi.unsupported\tf\t\n\
            _c\tany\tcom.apple.kpi.private\tf\t\n\
            _pre*\tany\tcom.apple.kpi.mach\tf\t\n";
        let table = Table::parse(
            "_a\tany\tcom.apple.kpi.bsd\tfunc\n\
             _b\tany\tcom.apple.kpi.unsupported\tfunc\n\
             _c\tany\tcom.apple.kpi.bsd\tfunc\n\
             _prefixed\tany\tcom.apple.kpi.mach\tfunc\n\
             _d\tarm64\tcom.apple.kpi.libkern\tdata\n",
        )
        .unwrap();
        let problems = check_against_reference(&table, reference);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("_b (arm64)"));
        assert!(problems.iter().any(|p| p.starts_with("_c (x86_64)")));
        assert!(problems.iter().any(|p| p.starts_with("_d (arm64)")));
    }

    #[test]
    fn bad_rows_are_rejected() {
        for bad in [
            "_a\tany\tcom.apple.kpi.private\tfunc",
            "_a\tany\tcom.apple.kpi.bsd",
            "a\tany\tcom.apple.kpi.bsd\tfunc",
            "_a\tarm64e\tcom.apple.kpi.bsd\tfunc",
            "_a\tany\tcom.apple.kpi.bsd\tvar",
            "_a\tany\tcom.apple.kpi.bsd\tfunc\n_a\tx86_64\tcom.apple.kpi.bsd\tfunc",
        ] {
            assert!(Table::parse(bad).is_err(), "accepted: {bad}");
        }
        let ok = Table::parse(
            "_a\tx86_64\tcom.apple.kpi.bsd\tfunc\n_a\tarm64\tcom.apple.kpi.mach\tfunc",
        )
        .unwrap();
        assert_eq!(
            ok.lookup("_a", Arch::Arm64e).unwrap().bundle,
            "com.apple.kpi.mach"
        );
    }

    #[test]
    fn unsupported_list_parses_and_lets_only_the_kauth_variant_use_kauth() {
        let table = Table::load(&root()).unwrap();
        for arch in Arch::ALL {
            let u = table.unsupported("_kauth_listen_scope", arch).unwrap();
            assert!(u.kauth_variant_ok && u.source.contains("kauth.h"));
            assert!(table.unsupported("_kauth_unlisten_scope", arch).is_some());
            let s = table.unsupported("_strncpy", arch).unwrap();
            assert!(!s.kauth_variant_ok);
        }
        assert!(table.unsupported("_IOLog", Arch::X86_64).is_none());
        for bad in [
            "_a\tany\tnone",
            "a\tany\tnone\tsrc",
            "_a\tarm64e\tnone\tsrc",
            "_a\tany\tsometimes\tsrc",
            "_a\tany\tnone\t ",
            "_a\tany\tnone\tsrc\n_a\tany\tnone\tsrc",
        ] {
            assert!(parse_unsupported(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn libraries_use_the_darwin_version_of_the_minimum_macos() {
        assert_eq!(bundle_version_for("10.15"), "19.0");
        assert_eq!(bundle_version_for("15.2"), "24.0");
        assert_eq!(bundle_version(), "20.0");
        let libs = libraries(["com.apple.kpi.bsd", "com.apple.kpi.mach"]);
        assert_eq!(libs.len(), 2);
        assert_eq!(libs["com.apple.kpi.bsd"], "20.0");
    }
}
