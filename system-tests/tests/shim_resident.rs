//! The shim's resident build variant (`--features resident`, `-DMT_RESIDENT`):
//! its MAC policy is registered without `MPC_LOADTIME_FLAG_UNLOADOK`, so no
//! MAC check pays for an unloadable policy, and the kext never unloads.
//! Empty without that feature rather than `required-features`, so that
//! `--test 'shim_*'` (the kauth run) still matches it.
#![cfg(feature = "resident")]
#![allow(missing_docs)]

use std::time::Duration;

use maptrace_abi::EventKind;
use maptrace_abi::decode::Decoder;
use maptrace_sim::{Config, KextError, ViolationPolicy};
use maptrace_system_tests::{
    Tunables, boot_fs, boot_loaded, drain, load, short_unload_wait, vectors_original,
};

fn workload(p: &maptrace_sim::Proc, path: &str) {
    let fd = p.open(path).expect("open");
    let a = p
        .mmap(
            fd,
            4 * 4096,
            maptrace_sim::prot::READ,
            maptrace_sim::map_flags::SHARED,
            0,
        )
        .expect("map");
    p.touch(a, 4 * 4096).expect("touch");
    p.munmap(a).expect("unmap");
    p.close(fd).expect("close");
}

#[test]
fn resident_policy_is_static_and_no_mac_check_busies_the_list() {
    // security/mac_base.c (xnu-11417.121.6): without UNLOADOK, next to the
    // static policies, the handle is below staticmax: MAC_POLICY_ITERATE
    // never calls mac_policy_list_conditional_busy's lock for it.
    let sim = boot_loaded(Config::default(), Tunables::default());
    let pol = sim.kernel().mac.policies();
    assert_eq!(pol.len(), 1);
    assert!(pol[0].is_static);
    let p = sim.spawn("app", 501);
    let before = sim.kernel().mac.busy_acquisitions();
    workload(&p, "/data/a.bin");
    assert_eq!(sim.kernel().mac.busy_acquisitions(), before);
}

#[test]
fn resident_kext_refuses_to_unload_and_keeps_tracing() {
    let sim = boot_loaded(Config::default(), Tunables::default());
    let err = sim
        .unload_kext()
        .expect_err("a resident kext never unloads");
    assert!(sim.kext_loaded());
    let log = sim.log_lines().join("\n");
    assert!(
        log.contains("resident build (MT_RESIDENT)") && log.contains("refusing to unload"),
        "{err:?}\n{log}"
    );
    // Still registered and still hooked: the next open is still traced.
    assert_eq!(sim.kernel().mac.policies().len(), 1);
    let mut dec = Decoder::new();
    drain(&sim, &mut dec);
    let p = sim.spawn("app", 501);
    workload(&p, "/data/a.bin");
    let recs = drain(&sim, &mut dec);
    // One MAP_SHARED mmap(2): XNU calls VNOP_MMAP twice for it (vm_map.c), and
    // both calls are traced.
    assert_eq!(recs.iter().filter(|r| r.kind == EventKind::Mmap).count(), 2);
}

#[test]
fn a_start_that_cannot_undo_its_hooks_stays_loaded_and_inert() {
    // XNU frees a kext whose start failed without calling its stop
    // (OSKext::loadKextWithIdentifier -> removeKext -> OSKext::unload, which
    // stops only a started kext and then unmaps the executable; libkern/c++/
    // OSKext.cpp, xnu-11417.121.6). The resident start registers its policy
    // last, after the sweep hooked the mounted filesystems; here that fails
    // (EEXIST: the name is taken) while another kext has hooked over our
    // entries, so the start cannot take its hooks back.
    const HFS_FILE: &str = "/Volumes/hfs/c.bin";
    const EEXIST: i32 = 17;
    let sim = boot_fs(Config {
        policy: ViolationPolicy::Collect,
        mac_register_error: Some(EEXIST),
        ..Config::default()
    });
    // An open file: the start's sweep finds hfs through its vnode.
    let p = sim.spawn("app", 501);
    let fd = p.open(HFS_FILE).expect("open");
    let gate = sim.hold_mac_policy_register();
    let (started, other) = std::thread::scope(|s| {
        let start = s.spawn(|| load(&sim, short_unload_wait(false)));
        assert!(
            gate.wait_held(1, Duration::from_secs(20)),
            "the start reaches mac_policy_register"
        );
        assert!(!vectors_original(&sim), "the start's sweep hooked hfs");
        let other = sim.foreign_hook(HFS_FILE).expect("the other kext hooks");
        gate.release();
        (start.join().expect("start thread"), other)
    });
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
    assert_eq!(
        started,
        Ok(()),
        "a start that cannot clean up must not be freed"
    );
    assert!(sim.kext_loaded());
    let log = sim.log_lines().join("\n");
    assert!(log.contains("staying loaded"), "{log}");
    // Inert: hooks forward, nothing is registered for a reader.
    workload(&p, HFS_FILE);
    assert!(sim.kernel().mac.policies().is_empty());
    assert!(sim.kernel().sysctl.oids().is_empty());
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
    // While the other kext still calls our trampolines, unload is refused.
    assert_eq!(sim.unload_kext(), Err(KextError::StopRefused(5)));
    // Once it has gone, unload takes the hooks back and frees everything.
    assert_eq!(other.unhook(&sim), 0);
    sim.unload_kext()
        .expect("unload once the other kext is gone");
    assert!(vectors_original(&sim));
    workload(&p, HFS_FILE);
    p.close(fd).expect("close");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}
