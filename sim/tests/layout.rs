//! `mt_xnu.h` as gcc lays it out (a table compiled by `build.rs`) against
//! XNU's real LP64 layouts: the reference tables in `sim/data/` (source and
//! tag in its README; a missing table fails) and the pinned numbers below.

use std::collections::BTreeMap;
use std::ffi::{CStr, c_char};
use std::path::PathBuf;

#[repr(C)]
struct Row {
    ty: *const c_char,
    field: *const c_char,
    offset: usize,
    size: usize,
}

unsafe extern "C" {
    static mt_xnu_layout: [Row; 0];
    static mt_xnu_layout_len: usize;
}

/// (struct, field) → (offset or value, size), from the C table.
fn c_table() -> BTreeMap<(String, String), (usize, usize)> {
    // SAFETY: a const size_t defined in csrc/xnu_layout.c.
    let len = unsafe { mt_xnu_layout_len };
    let base = (&raw const mt_xnu_layout).cast::<Row>();
    let mut out = BTreeMap::new();
    for i in 0..len {
        let at = base.wrapping_add(i);
        // SAFETY: the table has `len` rows.
        let row = unsafe { &*at };
        // SAFETY: both names are C string literals.
        let ty = unsafe { CStr::from_ptr(row.ty) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above.
        let field = unsafe { CStr::from_ptr(row.field) }
            .to_string_lossy()
            .into_owned();
        out.insert((ty, field), (row.offset, row.size));
    }
    out
}

#[test]
fn pinned_numbers() {
    let t = c_table();
    let get = |s: &str, f: &str| t[&(s.to_string(), f.to_string())].0;
    for (s, size) in [
        ("kmod_info", 196),
        ("kmod_reference", 16),
        ("sysctl_oid", 80),
        ("sysctl_oid_list", 8),
        ("sysctl_req", 80),
        ("mac_policy_conf", 80),
        ("mac_policy_ops", 2680),
        ("vnodeop_desc", 64),
        ("vnodeopv_desc", 16),
        ("vnodeopv_entry_desc", 16),
        ("vnop_mmap_args", 32),
        ("vnop_mmap_check_args", 32),
        ("vnop_mnomap_args", 24),
        ("vnop_pagein_args", 64),
    ] {
        assert_eq!(get(s, "__sizeof__"), size, "sizeof {s}");
    }
    assert_eq!(get("kmod_info", "reference_list"), 148, "pack(4)");
    assert_eq!(get("kmod_info", "__alignof__"), 4);
    assert_eq!(get("kmod_info", "stop"), 188);
    assert_eq!(get("vnop_pagein_args", "a_f_offset"), 32);
    assert_eq!(get("sysctl_oid", "oid_version"), 72);
}

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// A reference table; its absence is a failure, never a skipped check.
fn read_table(file: &str) -> String {
    let path = reference_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the XNU reference tables ship with the repo)",
            path.display()
        )
    })
}

#[test]
fn matches_the_xnu_reference_tables() {
    let t = c_table();
    for file in ["layout_x86_64.tsv", "layout_arm64e.tsv"] {
        let text = read_table(file);
        let mut checked = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let cols: Vec<&str> = line.split('\t').collect();
            let (s, f) = (cols[0], cols[1]);
            let value: usize = cols[2].parse().expect("number");
            if s == "mac_policy_ops" && !f.starts_with("__") {
                // Modelled as 335 pointer slots: slot i sits at 8 * i.
                assert_eq!(value % 8, 0, "{line}");
                assert!(value / 8 < 335, "{line}");
                checked += 1;
                continue;
            }
            let mine = t
                .get(&(s.to_string(), f.to_string()))
                .unwrap_or_else(|| panic!("{s}.{f} missing from mt_xnu.h"));
            assert_eq!(mine.0, value, "{file}: {s}.{f}");
            if let Some(size) = cols.get(3).filter(|c| !c.is_empty()) {
                assert_eq!(
                    mine.1,
                    size.parse::<usize>().expect("size"),
                    "{file}: size of {s}.{f}"
                );
            }
            checked += 1;
        }
        assert!(checked > 400, "{file}: only {checked} rows checked");
    }
}

#[test]
fn slot_indices_match_the_reference() {
    // The slots the shim fills keep their index from macOS 11 to macOS 15.
    for file in [
        "mac_policy_ops_slots.xnu-11417.101.15.tsv",
        "mac_policy_ops_slots.xnu-7195.141.2.tsv",
    ] {
        let text = read_table(file);
        let index = |name: &str| -> u32 {
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .find(|(_, f)| *f == name)
                .and_then(|(i, _)| i.parse().ok())
                .unwrap_or_else(|| panic!("{file}: {name} not in the slot table"))
        };
        use maptrace_sim::xnu;
        assert_eq!(index("mpo_file_check_mmap"), xnu::MPO_FILE_CHECK_MMAP);
        assert_eq!(index("mpo_mount_check_umount"), xnu::MPO_MOUNT_CHECK_UMOUNT);
        assert_eq!(index("mpo_policy_destroy"), xnu::MPO_POLICY_DESTROY);
        assert_eq!(index("mpo_policy_init"), xnu::MPO_POLICY_INIT);
        assert_eq!(index("mpo_policy_initbsd"), xnu::MPO_POLICY_INITBSD);
        assert_eq!(
            index("mpo_proc_notify_exec_complete"),
            xnu::MPO_PROC_NOTIFY_EXEC_COMPLETE
        );
        assert_eq!(index("mpo_vnode_check_exec"), xnu::MPO_VNODE_CHECK_EXEC);
        assert_eq!(index("mpo_vnode_check_open"), xnu::MPO_VNODE_CHECK_OPEN);
        assert_eq!(index("mpo_vnode_notify_open"), xnu::MPO_VNODE_NOTIFY_OPEN);
    }
}
