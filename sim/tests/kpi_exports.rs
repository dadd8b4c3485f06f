//! Every function and data symbol `mt_xnu.h` declares is one a third-party
//! kext may link: exported by a public KPI bundle (not `com.apple.kpi.private`)
//! in the XNU reference tables, on x86_64 and (except the noted ones) arm64.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The header without comments and preprocessor lines.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    let mut kept = String::new();
    let mut continued = false;
    for line in out.lines() {
        let directive = continued || line.trim_start().starts_with('#');
        continued = directive && line.ends_with('\\');
        if !directive {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Names declared at file scope in the header: prototypes and extern data.
fn declared() -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kext-shim/src/xnu/mt_xnu.h");
    let text = code(&std::fs::read_to_string(path).expect("mt_xnu.h"));
    let mut out = BTreeSet::new();
    let (mut depth, mut stmt) = (0i32, String::new());
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ';' if depth == 0 => {
                let s = std::mem::take(&mut stmt);
                let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
                if s.starts_with("typedef") || s.starts_with("MT_XNU_ASSERT") {
                    continue;
                }
                if let Some(d) = s.strip_prefix("extern ") {
                    out.insert(d.split_whitespace().last().unwrap_or("").to_string());
                } else if let Some(i) = s.find('(') {
                    let name = s[..i].trim().rsplit([' ', '*']).next().unwrap_or("");
                    out.insert(name.to_string());
                }
                continue;
            }
            _ => {}
        }
        if depth == 0 && c != '}' {
            stmt.push(c);
        } else if depth > 0 {
            stmt.clear();
        }
    }
    out
}

#[test]
fn the_header_declares_the_kpis_the_shim_needs() {
    let d = declared();
    for name in [
        "vnode_isinuse",
        "vnode_getwithref",
        "vnode_put",
        "vnode_ref",
        "vnode_rele",
        "vnode_vid",
        "vnode_vtype",
        "vnode_mount",
        "vnode_isrecycled",
        "vfs_statfs",
        "vn_getpath",
        "vnode_iterate",
        "vfs_iterate",
        "vfs_fsadd",
        "vfs_fsremove",
        "vnode_create",
        "vnode_recycle",
        "vnop_mmap_desc",
        "vnop_pagein_desc",
        "vnop_mnomap_desc",
        "vnop_mmap_check_desc",
        "kauth_listen_scope",
        "kauth_unlisten_scope",
        "mac_policy_register",
        "mac_policy_unregister",
        "sysctl_register_oid",
        "sysctl_unregister_oid",
        "sysctl__kern_children",
        "proc_suser",
        "kauth_cred_get",
        "IOMalloc",
        "IOMallocZero",
        "IOFree",
        "IOLog",
        "IOSleep",
        "lck_grp_alloc_init",
        "lck_grp_free",
        "lck_mtx_alloc_init",
        "lck_mtx_lock",
        "lck_mtx_unlock",
        "lck_mtx_free",
        "lck_spin_alloc_init",
        "lck_spin_lock",
        "lck_spin_unlock",
        "lck_spin_free",
        "mach_absolute_time",
        "absolutetime_to_nanoseconds",
        "cpu_number",
        "current_thread",
        "thread_tid",
        "proc_selfpid",
        "proc_selfname",
        "vfs_context_current",
        "vfs_context_proc",
        "proc_pid",
        "read_random",
        "panic",
    ] {
        assert!(
            d.contains(name),
            "mt_xnu.h does not declare {name}; it declares {d:?}"
        );
    }
}

#[test]
fn every_declared_symbol_is_in_a_public_kpi_bundle() {
    // The newest table and the macOS 11 one (the oldest release supported).
    for file in [
        "symbol_bundles.xnu-11417.101.15.tsv",
        "symbol_bundles.xnu-7195.141.2.tsv",
    ] {
        check_table(file);
    }
}

fn check_table(file: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kext-shim/kpi/xnu");
    let path = dir.join(file);
    // Absent is a failure: the tables ship with the repo.
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // symbol -> [(arch, bundle)]
    let mut table: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() >= 3 {
            table
                .entry(cols[0].to_string())
                .or_default()
                .push((cols[1].to_string(), cols[2].to_string()));
        }
    }
    let public = |arch: &str, sym: &str| {
        table.get(&format!("_{sym}")).is_some_and(|rows| {
            rows.iter().any(|(a, b)| {
                (a == "any" || a == arch)
                    && b.starts_with("com.apple.kpi.")
                    && b != "com.apple.kpi.private"
            })
        })
    };
    let d = declared();
    assert!(d.len() > 60, "the header parse found only {d:?}");
    for sym in &d {
        assert!(
            public("x86_64", sym),
            "{file}: {sym} is not exported by a public KPI bundle on x86_64"
        );
        // cpu_number is private on arm64: the shim shards by a thread-id hash there.
        if sym != "cpu_number" {
            assert!(
                public("arm64", sym),
                "{file}: {sym} is not exported by a public KPI bundle on arm64"
            );
        }
    }
    assert!(
        !public("arm64", "cpu_number"),
        "the arm64 exception still holds"
    );
}
