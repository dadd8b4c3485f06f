//! The boundary contract table (`sim/contracts.tsv`): its coverage of the
//! kext's imports and callbacks, and the rules the simulator enforces from
//! it, each provoked by a deliberately bad call that must name its row.

mod kpi;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};

use kpi::*;
use maptrace_sim::{Config, Cred, Sim, Violation, ViolationPolicy, map_flags, prot, xnu};

const PS: u64 = 4096;

// ---------------------------------------------------------------- the table

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One row of sim/contracts.tsv.
#[derive(Debug)]
struct Row {
    id: String,
    boundary: String,
    name: String,
    xnu_source: String,
    tag: String,
    enforced_by: String,
}

/// The table, parsed; a missing or malformed table fails the test.
fn table() -> Vec<Row> {
    let path = root().join("sim/contracts.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the contract table {} is missing: {e}", path.display()));
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty());
    assert_eq!(
        lines.next(),
        Some("id\tboundary\tname\trule\tcontext\treturns\txnu_source\ttag\tenforced_by"),
        "header"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 9, "9 columns: {l}");
            assert!(
                f.iter().all(|x| !x.trim().is_empty()),
                "an empty field: {l}"
            );
            Row {
                id: f[0].into(),
                boundary: f[1].into(),
                name: f[2].into(),
                xnu_source: f[6].into(),
                tag: f[7].into(),
                enforced_by: f[8].into(),
            }
        })
        .collect()
}

fn shim_sources() -> String {
    let dir = root().join("kext-shim/src");
    let mut all = String::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("kext-shim/src")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no shim sources");
    for f in files {
        all.push_str(&std::fs::read_to_string(f).expect("read"));
    }
    all
}

#[test]
fn every_row_is_well_formed_and_cites_xnu() {
    let rows = table();
    assert!(rows.len() > 50, "{} rows", rows.len());
    let mut ids = BTreeSet::new();
    for r in &rows {
        assert!(ids.insert(r.id.clone()), "duplicate id {}", r.id);
        assert!(
            r.id.starts_with(&format!("{}.", r.name)) && r.id.len() > r.name.len() + 1,
            "id {} is not {}.rule",
            r.id,
            r.name
        );
        assert!(
            r.boundary == "kpi" || r.boundary == "callback",
            "{}: boundary {}",
            r.id,
            r.boundary
        );
        let file = r.xnu_source.split_whitespace().next().unwrap_or("");
        assert!(
            file.contains('/') && file.contains('.'),
            "{}: no XNU file in {:?}",
            r.id,
            r.xnu_source
        );
        assert!(
            r.tag.starts_with("xnu-") && r.tag[4..].chars().all(|c| c.is_ascii_digit() || c == '.'),
            "{}: tag {:?}",
            r.id,
            r.tag
        );
    }
}

#[test]
fn every_imported_kpi_has_a_row() {
    let rows = table();
    let kpis: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.boundary == "kpi")
        .map(|r| r.name.as_str())
        .collect();
    let symbols =
        std::fs::read_to_string(root().join("kext-shim/kpi/symbols.tsv")).expect("symbols.tsv");
    let mut missing = Vec::new();
    for l in symbols
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sym = l.split('\t').next().unwrap_or("");
        let name = sym.strip_prefix('_').unwrap_or(sym);
        if !kpis.contains(name) {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "KPIs without a contract row: {missing:?}"
    );
}

/// The calls the kernel makes into the kext, derived from the shim sources:
/// MAC ops slots, vector trampolines, probe filesystem ops, the kauth
/// listener, sysctl handlers, iterate callouts, and the kmod routines.
fn callbacks_in_shim(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in src.lines() {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("mt_mac_ops.mpo_slots[MPO_") {
            let slot = rest.split(']').next().unwrap_or("");
            out.insert(format!("mpo_{}", slot.to_ascii_lowercase()));
        }
        if let Some(rest) = l.strip_prefix("mt_hooks[MT_VOP_") {
            let op = rest.split(']').next().unwrap_or("");
            out.insert(format!("vnop_{}", op.to_ascii_lowercase()));
        }
        if l.contains(".opve_op = &vnop_") && !l.contains("vnop_default_desc") {
            let d = l.split("&vnop_").nth(1).unwrap_or("");
            out.insert(format!(
                "vnop_{}",
                d.trim_end_matches(';').trim_end_matches("_desc")
            ));
        }
        if l.contains("kauth_listen_scope(") && !l.starts_with('*') {
            out.insert("kauth_listener".into());
        }
        if l.contains("SYSCTL_HANDLER_ARGS") && l.starts_with("static int") {
            out.insert("sysctl_handler".into());
        }
        if l.starts_with("vnode_iterate(") || l.contains(" vnode_iterate(") && l.ends_with(");") {
            out.insert("vnode_iterate_callout".into());
        }
        if l.starts_with("vfs_iterate(") || l.contains(" vfs_iterate(") && l.ends_with(");") {
            out.insert("vfs_iterate_callout".into());
        }
        if l.starts_with("kern_return_t mt_kmod_start(") {
            out.insert("kmod_start".into());
        }
        if l.starts_with("kern_return_t mt_kmod_stop(") {
            out.insert("kmod_stop".into());
        }
    }
    out
}

#[test]
fn every_callback_the_shim_hands_the_kernel_has_a_row() {
    let rows = table();
    let callbacks: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.boundary == "callback")
        .map(|r| r.name.as_str())
        .collect();
    let found = callbacks_in_shim(&shim_sources());
    // The derivation itself must see what the shim is known to register.
    for known in [
        "mpo_file_check_mmap",
        "mpo_vnode_check_open",
        "mpo_vnode_check_exec",
        "vnop_mmap",
        "vnop_pagein",
        "vnop_mnomap",
        "vnop_reclaim",
        "kauth_listener",
        "sysctl_handler",
        "vnode_iterate_callout",
        "vfs_iterate_callout",
        "kmod_start",
        "kmod_stop",
    ] {
        assert!(
            found.contains(known),
            "the shim scan lost {known}: {found:?}"
        );
    }
    let missing: Vec<_> = found
        .iter()
        .filter(|c| !callbacks.contains(c.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "callbacks without a contract row: {missing:?}"
    );
}

/// Every `.rs` file below `dir` (the simulator's modules have subfolders).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("a source folder") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

#[test]
fn every_rule_the_simulator_reports_has_a_row() {
    let ids: BTreeSet<String> = table().into_iter().map(|r| r.id).collect();
    let mut reported = BTreeMap::new();
    for p in rust_files(&root().join("sim/src")) {
        let text = std::fs::read_to_string(&p).expect("read");
        for (i, part) in text.split("rule: \"").enumerate().skip(1) {
            let id = part.split('"').next().unwrap_or("").to_string();
            reported.insert(id, format!("{}#{i}", p.display()));
        }
    }
    assert!(!reported.is_empty(), "no rule found in sim/src");
    let missing: Vec<_> = reported
        .iter()
        .filter(|(id, _)| !ids.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a contract row: {missing:?}"
    );
}

#[test]
fn enforced_by_names_a_test_that_exists() {
    for r in table() {
        let e = r.enforced_by.as_str();
        if e == "doc" || e.starts_with("pending:") {
            continue;
        }
        let (file, test) = e.split_once("::").unwrap_or((e, ""));
        let text = std::fs::read_to_string(root().join(file))
            .unwrap_or_else(|_| panic!("{}: enforced_by names a missing file {file}", r.id));
        if !test.is_empty() {
            assert!(
                text.contains(&format!("fn {test}(")),
                "{}: no test {test} in {file}",
                r.id
            );
        }
    }
}

// ---------------------------------------------------------------- enforcement

extern "C" fn noop(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    0
}

/// A simulator with an empty kext loaded: the test thread plays its code.
fn loaded() -> Sim {
    let sim = Sim::boot(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    });
    // SAFETY: kmod_info is plain data; all-zero is valid.
    let mut ki: xnu::kmod_info = unsafe { std::mem::zeroed() };
    ki.start = Some(noop);
    ki.stop = Some(noop);
    // SAFETY: a leaked kmod_info whose routines do nothing.
    unsafe { sim.load_kext(Box::into_raw(Box::new(ki))) }.unwrap();
    sim.mount("apfs", "/").unwrap();
    sim.add_file("/f", 8 * PS).unwrap();
    sim
}

fn rules(v: &[Violation]) -> Vec<&'static str> {
    v.iter()
        .filter_map(|x| match x {
            Violation::Contract { rule, .. } => Some(*rule),
            _ => None,
        })
        .collect()
}

fn vnode_of(sim: &Sim, path: &str) -> *mut xnu::vnode {
    // The vnode must exist: open it once.
    let p = sim.spawn("o", 0);
    let fd = p.open(path).unwrap();
    p.close(fd).unwrap();
    sim.vnode_addr(path).expect("vnode") as *mut xnu::vnode
}

#[test]
fn vn_getpath_with_a_null_buffer_breaks_its_contract() {
    let sim = loaded();
    let vp = vnode_of(&sim, "/f");
    let mut len: c_int = 1024;
    // SAFETY: a deliberately bad KPI call; the simulator does not write.
    let r = unsafe { vn_getpath(vp, std::ptr::null_mut(), &raw mut len) };
    assert_eq!(r, 22);
    let mut buf = [0 as c_char; 64];
    // SAFETY: as above, with a NULL length.
    let r = unsafe { vn_getpath(vp, buf.as_mut_ptr(), std::ptr::null_mut()) };
    assert_eq!(r, 22);
    assert_eq!(
        rules(&sim.take_violations()),
        ["vn_getpath.buffer_and_len_nonnull"; 2]
    );
}

#[test]
fn vn_getpath_lengths_follow_xnu() {
    let sim = loaded();
    let vp = vnode_of(&sim, "/f");
    let mut buf = [0 as c_char; 64];
    let call = |mut len: c_int, buf: &mut [c_char]| {
        // SAFETY: buf holds at least len bytes whenever len > 0.
        let r = unsafe { vn_getpath(vp, buf.as_mut_ptr(), &raw mut len) };
        (r, len)
    };
    assert_eq!(call(-1, &mut buf).0, 22, "a negative length is EINVAL");
    assert_eq!(call(1, &mut buf).0, 28, "no room is ENOSPC");
    assert_eq!(call(64, &mut buf), (0, 3), "\"/f\" and its NUL");
    let mut len: c_int = 64;
    // SAFETY: a NULL vnode is EINVAL in build_path.
    let r = unsafe { vn_getpath(std::ptr::null_mut(), buf.as_mut_ptr(), &raw mut len) };
    assert_eq!(r, 22);
    assert_eq!(sim.take_violations(), vec![]);
    drop(sim);
    // Before vn_getpath_ext_int, build_path saw the negative length.
    let sim = Sim::boot(Config {
        release: maptrace_sim::Release::Catalina,
        ..Config::default()
    });
    sim.mount("apfs", "/").unwrap();
    sim.add_file("/f", PS).unwrap();
    let vp = vnode_of(&sim, "/f");
    let mut len: c_int = -1;
    // SAFETY: buf is valid; the length is negative on purpose.
    let r = unsafe { vn_getpath(vp, buf.as_mut_ptr(), &raw mut len) };
    assert_eq!(r, 28, "xnu-7195.141.2: ENOSPC");
}

#[test]
fn a_null_iterate_callout_breaks_its_contract() {
    let sim = loaded();
    // SAFETY: deliberately bad KPI calls; the simulator does not call NULL.
    unsafe { vfs_iterate(0, None, std::ptr::null_mut()) };
    // SAFETY: as above.
    unsafe { vnode_iterate(std::ptr::null_mut(), 0, None, std::ptr::null_mut()) };
    assert_eq!(
        rules(&sim.take_violations()),
        [
            "vfs_iterate.callout_nonnull",
            "vnode_iterate.callout_nonnull"
        ]
    );
}

extern "C" fn first_mount_only(_mp: *mut xnu::mount, _arg: *mut c_void) -> c_int {
    xnu::VFS_RETURNED_DONE as c_int
}

/// A kauth vnode listener that walks the mounts, as a sweep from discovery
/// would.
unsafe extern "C" fn walk_mounts(
    _c: xnu::kauth_cred_t,
    _i: *mut c_void,
    _a: xnu::kauth_action_t,
    _a0: usize,
    _a1: usize,
    _a2: usize,
    _a3: usize,
) -> c_int {
    // SAFETY: a KPI call with a valid callout.
    unsafe { vfs_iterate(0, Some(first_mount_only), std::ptr::null_mut()) };
    xnu::KAUTH_RESULT_DEFER as c_int
}

#[test]
fn a_walk_of_mounts_from_an_open_hook_breaks_its_contract() {
    let sim = loaded();
    // From kmod start or a thread of its own, a walk is fine.
    // SAFETY: a KPI call with a valid callout.
    unsafe { vfs_iterate(0, Some(first_mount_only), std::ptr::null_mut()) };
    assert_eq!(sim.take_violations(), vec![]);
    // From a listener open(2) calls, it is not.
    // SAFETY: KPI call with a static scope name.
    let l = unsafe {
        kauth_listen_scope(
            c"com.apple.kauth.vnode".as_ptr(),
            Some(walk_mounts),
            std::ptr::null_mut(),
        )
    };
    assert!(!l.is_null());
    let p = sim.spawn("p", 501);
    let fd = p.open("/f").unwrap();
    p.close(fd).unwrap();
    // SAFETY: our listener.
    unsafe { kauth_unlisten_scope(l) };
    let v = sim.take_violations();
    assert!(
        rules(&v).contains(&"vnode_iterate.not_in_file_operation"),
        "{v:#?}"
    );
    // After the operation, a walk is fine again.
    // SAFETY: a KPI call with a valid callout.
    unsafe { vfs_iterate(0, Some(first_mount_only), std::ptr::null_mut()) };
    assert_eq!(sim.take_violations(), vec![]);
}

unsafe extern "C" fn defer(
    _c: xnu::kauth_cred_t,
    _i: *mut c_void,
    _a: xnu::kauth_action_t,
    _a0: usize,
    _a1: usize,
    _a2: usize,
    _a3: usize,
) -> c_int {
    xnu::KAUTH_RESULT_DEFER as c_int
}

#[test]
fn kauth_listen_scope_with_a_null_identifier_breaks_its_contract() {
    let sim = loaded();
    // SAFETY: a deliberately bad KPI call.
    let l = unsafe { kauth_listen_scope(std::ptr::null(), Some(defer), std::ptr::null_mut()) };
    assert!(l.is_null());
    assert_eq!(
        rules(&sim.take_violations()),
        ["kauth_listen_scope.identifier_nonnull"]
    );
    // A NULL callback is legal: registered, never called.
    // SAFETY: KPI call with a static scope name.
    let l = unsafe {
        kauth_listen_scope(
            c"com.apple.kauth.vnode".as_ptr(),
            None,
            std::ptr::null_mut(),
        )
    };
    assert!(!l.is_null());
    let p = sim.spawn("p", 501);
    let fd = p.open("/f").unwrap();
    p.close(fd).unwrap();
    // SAFETY: our listener.
    unsafe { kauth_unlisten_scope(l) };
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
fn kauth_scope_tables_hold_fifteen_listeners() {
    let sim = loaded();
    let listen = |scope: &std::ffi::CStr| {
        // SAFETY: KPI call with a static scope name.
        unsafe { kauth_listen_scope(scope.as_ptr(), Some(defer), std::ptr::null_mut()) }
    };
    let vnode = c"com.apple.kauth.vnode";
    let mut held: Vec<_> = (0..15).map(|_| listen(vnode)).collect();
    assert!(held.iter().all(|l| !l.is_null()));
    assert!(listen(vnode).is_null(), "the 16th listener: table full");
    // SAFETY: our listener; its slot frees.
    unsafe { kauth_unlisten_scope(held.pop().unwrap()) };
    let again = listen(vnode);
    assert!(!again.is_null(), "a freed slot is reused");
    held.push(again);
    // A scope nobody registered: the dangling list has no limit.
    let dangling: Vec<_> = (0..20).map(|_| listen(c"org.example.scope")).collect();
    assert!(dangling.iter().all(|l| !l.is_null()));
    for l in held.into_iter().chain(dangling) {
        // SAFETY: our listeners.
        unsafe { kauth_unlisten_scope(l) };
    }
    assert_eq!(sim.take_violations(), vec![]);
}

#[test]
fn kauth_unlisten_scope_of_another_kexts_listener_breaks_its_contract() {
    let sim = loaded();
    let k = sim.kernel();
    let other = k
        .kauth
        .listen_other(k, "com.apple.kauth.vnode", defer as *const () as usize, 0);
    assert_ne!(other, 0);
    // SAFETY: a deliberately bad KPI call: a live handle, not ours.
    unsafe { kauth_unlisten_scope(other as xnu::kauth_listener_t) };
    assert_eq!(
        rules(&sim.take_violations()),
        ["kauth_unlisten_scope.own_listener"]
    );
}

extern "C" fn allow_mmap(
    _c: xnu::kauth_cred_t,
    _fg: *mut xnu::fileglob,
    _l: *mut xnu::label,
    _prot: c_int,
    _flags: c_int,
    _pos: u64,
    _maxprot: *mut c_int,
) -> c_int {
    0
}

fn policy(name: &'static std::ffi::CStr, flags: u32) -> *mut xnu::mac_policy_conf {
    // SAFETY: all-zero ops are valid (every slot None).
    let mut ops: xnu::mac_policy_ops = unsafe { std::mem::zeroed() };
    // SAFETY: the slot is called back as mpo_file_check_mmap_t.
    ops.mpo_slots[xnu::MPO_FILE_CHECK_MMAP as usize] = Some(unsafe {
        std::mem::transmute::<*const (), unsafe extern "C" fn()>(allow_mmap as *const ())
    });
    // SAFETY: all-zero is a valid conf; the fields that matter are set below.
    let mut c: xnu::mac_policy_conf = unsafe { std::mem::zeroed() };
    c.mpc_name = name.as_ptr();
    c.mpc_fullname = c"contract policy".as_ptr();
    c.mpc_ops = Box::into_raw(Box::new(ops));
    c.mpc_loadtime_flags = flags as c_int;
    Box::into_raw(Box::new(c))
}

#[test]
fn an_unloadable_mac_policy_makes_every_check_take_the_policy_mutex() {
    let sim = loaded();
    let p = sim.spawn("p", 501);
    let fd = p.open("/f").unwrap();
    let mac = &sim.kernel().mac;
    let map = || {
        let a = p.mmap(fd, PS, prot::READ, map_flags::SHARED, 0).unwrap();
        p.munmap(a).unwrap();
    };
    // Without UNLOADOK the late policy is static: checks take no mutex.
    let stuck = policy(c"static", 0);
    let mut h = 0u32;
    // SAFETY: KPI call with a complete conf.
    let r = unsafe { mac_policy_register(stuck, &raw mut h, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    map();
    assert_eq!(mac.busy_acquisitions(), 0, "static policies only");
    // With UNLOADOK: numloaded > staticmax, busy + unbusy on every check.
    let unloadable = policy(c"unloadable", xnu::MPC_LOADTIME_FLAG_UNLOADOK);
    let mut h2 = 0u32;
    // SAFETY: as above.
    let r = unsafe { mac_policy_register(unloadable, &raw mut h2, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    let before = mac.busy_acquisitions();
    map();
    let per_mmap = mac.busy_acquisitions() - before;
    assert!(
        per_mmap >= 2,
        "file_check_mmap took the mutex {per_mmap} times"
    );
    assert_eq!(per_mmap % 2, 0, "busy and unbusy pair up");
    // Once it is gone the cost goes with it.
    // SAFETY: KPI call with our handle.
    assert_eq!(unsafe { mac_policy_unregister(h2) }, 0);
    let before = mac.busy_acquisitions();
    map();
    assert_eq!(mac.busy_acquisitions(), before);
    // SAFETY: the static policy may now go (the test changes its own conf).
    unsafe { (*stuck).mpc_loadtime_flags = xnu::MPC_LOADTIME_FLAG_UNLOADOK as c_int };
    // SAFETY: KPI call with our handle.
    assert_eq!(unsafe { mac_policy_unregister(h) }, 0);
    assert_eq!(sim.take_violations(), vec![]);
}

extern "C" fn restart_handler(
    _o: *mut xnu::sysctl_oid,
    _a1: *mut c_void,
    _a2: c_int,
    _req: *mut xnu::sysctl_req,
) -> c_int {
    -1 // ERESTART
}

fn kern_oid(name: &'static std::ffi::CStr, number: c_int) -> *mut xnu::sysctl_oid {
    Box::into_raw(Box::new(xnu::sysctl_oid {
        oid_parent: &raw mut sysctl__kern_children,
        oid_link: xnu::sysctl_oid__bindgen_ty_1 {
            sle_next: std::ptr::null_mut(),
        },
        oid_number: number,
        oid_kind: (xnu::CTLTYPE_OPAQUE | xnu::CTLFLAG_RD | xnu::CTLFLAG_LOCKED) as c_int,
        oid_arg1: std::ptr::null_mut(),
        oid_arg2: 0,
        oid_name: name.as_ptr(),
        oid_handler: Some(restart_handler),
        oid_fmt: c"".as_ptr(),
        oid_descr: c"".as_ptr(),
        oid_version: xnu::SYSCTL_OID_VERSION as c_int,
        oid_refcnt: 0,
    }))
}

#[test]
fn a_sysctl_handler_returning_erestart_breaks_its_contract() {
    let sim = loaded();
    let o = kern_oid(c"ctrestart", xnu::OID_AUTO);
    // SAFETY: KPI call with a complete, leaked OID.
    unsafe { sysctl_register_oid(o) };
    let mut buf = [0u8; 8];
    assert!(
        sim.sysctl_read("kern.ctrestart", Some(&mut buf), Cred::Root)
            .is_err()
    );
    // SAFETY: our OID.
    unsafe { sysctl_unregister_oid(o) };
    assert_eq!(
        rules(&sim.take_violations()),
        ["sysctl_handler.returns_errno"]
    );
}

#[test]
fn a_bad_or_duplicate_oid_number_breaks_its_contract() {
    let sim = loaded();
    let first = kern_oid(c"ctfirst", 4242);
    let dup = kern_oid(c"ctdup", 4242);
    let bad = kern_oid(c"ctbad", -7);
    for o in [first, dup, bad] {
        // SAFETY: KPI call with a complete, leaked OID.
        unsafe { sysctl_register_oid(o) };
    }
    assert_eq!(
        rules(&sim.take_violations()),
        [
            "sysctl_register_oid.unique_number",
            "sysctl_register_oid.valid_number"
        ]
    );
    // SAFETY: our OID.
    unsafe { sysctl_unregister_oid(first) };
}

#[test]
fn iofree_of_the_wrong_size_is_caught() {
    let sim = loaded();
    // SAFETY: KPI call.
    let p = unsafe { IOMalloc(32) };
    // SAFETY: frees with a wrong size on purpose; the simulator catches it.
    unsafe { IOFree(p, 16) };
    let v = sim.take_violations();
    assert!(
        matches!(v.as_slice(), [Violation::BadFree(s)] if s.contains("32-byte")),
        "{v:?}"
    );
}

#[test]
fn vnode_rele_without_a_reference_is_unbalanced() {
    let sim = loaded();
    let vp = vnode_of(&sim, "/f");
    // SAFETY: a deliberately unbalanced KPI call on a live vnode.
    unsafe { vnode_rele(vp) };
    let v = sim.take_violations();
    assert!(
        v.iter().any(|x| matches!(x, Violation::UnbalancedCount(_))),
        "{v:?}"
    );
}

// ---------------------------------------------------------------- address scan

unsafe extern "C" {
    /// The shim's global state and its kmod_info (linked into the sim).
    static mt_g: u8;
    static kmod_info: xnu::kmod_info;
    static vnop_pagein_desc: xnu::vnodeop_desc;
}

#[test]
fn the_kexts_text_globals_and_stacks_are_kernel_addresses_to_the_scan() {
    let sim = Sim::boot(Config::default());
    sim.mount("apfs", "/").unwrap();
    sim.add_file("/f", 8 * PS).unwrap();
    sim.load_shim().unwrap();
    let p = sim.spawn("p", 501);
    let fd = p.open("/f").unwrap();
    let a = p
        .mmap(fd, 4 * PS, prot::READ, map_flags::SHARED, 0)
        .unwrap();
    p.touch(a, 4 * PS).unwrap(); // the pagein hook runs on this thread's stack
    // The hook the shim put in apfs's vector.
    let vp = sim.vnode_addr("/f").unwrap();
    let v_op = sim.kernel().vfs.v_op_offset;
    // SAFETY: the exported descriptor, written once at boot.
    let slot = unsafe { vnop_pagein_desc.vdesc_offset } as usize;
    // SAFETY: reading the live vnode's v_op, in the arena.
    let vector = unsafe { *((vp as usize + v_op) as *const *const u64) };
    let entry = vector.wrapping_add(slot);
    // SAFETY: the vector has an entry per descriptor.
    let hook = unsafe { *entry };
    let here = 0u64;
    let planted = [
        ("mt_g", &raw const mt_g as u64),
        ("kmod_info", &raw const kmod_info as u64),
        ("a hook trampoline", hook),
        ("the stack a hook ran on", &raw const here as u64),
    ];
    for (what, addr) in planted {
        assert!(
            sim.is_kernel_address(addr),
            "{what} {addr:#x} is outside {:x?}",
            sim.kernel_address_ranges()
        );
        let mut out = b"report: ok ".to_vec();
        assert!(sim.find_kernel_address_leaks(&out).is_empty());
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(format!(" {addr:#x} {addr}").as_bytes());
        assert_eq!(sim.find_kernel_address_leaks(&out).len(), 3, "{what}");
        assert!(!sim.find_kernel_addresses(&out).is_empty(), "{what}");
    }
    p.munmap(a).unwrap();
    p.close(fd).unwrap();
    sim.unload_kext().unwrap();
}
