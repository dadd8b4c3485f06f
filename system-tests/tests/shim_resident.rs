//! The shim's resident build variant (`--features resident`, `-DMT_RESIDENT`):
//! its MAC policy is registered without `MPC_LOADTIME_FLAG_UNLOADOK`, so no
//! MAC check pays for an unloadable policy, and the kext never unloads.
//! Empty without that feature rather than `required-features`, so that
//! `--test 'shim_*'` (the kauth run) still matches it.
#![cfg(feature = "resident")]
#![allow(missing_docs)]

use maptrace_abi::EventKind;
use maptrace_abi::decode::Decoder;
use maptrace_sim::Config;
use maptrace_system_tests::{Tunables, boot_loaded, drain};

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
