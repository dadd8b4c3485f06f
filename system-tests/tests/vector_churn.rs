//! The vector table under churn: a filesystem type unhooked at its last
//! unmount and hooked again at its next mount, many more times than the
//! table has slots (ejects of a USB stick or a DMG), and unmount(2)
//! attempts by a user who may not unmount (XNU asks the MAC policies
//! before it refuses them: bsd/vfs/vfs_syscalls.c unmount, safedounmount,
//! xnu-11417.121.6 and xnu-7195.141.2).

use std::sync::atomic::Ordering;

use maptrace_abi::EventKind;
use maptrace_abi::decode::Decoder;
use maptrace_sim::{Config, Cred, Proc, Sim, ViolationPolicy, map_flags, prot};
use maptrace_system_tests::{Tunables, boot_fs, drain, load, stats, vector_hooked};

const PAGE: u64 = 4096;
/// More rounds than the table has slots (`MT_CORE_MAX_VECTORS`, 64).
const ROUNDS: usize = 70;
const STICK: &str = "/Volumes/stick";
const FILE: &str = "/Volumes/stick/f";
const EPERM: i32 = 1;

/// A simulator collecting violations, the shim loaded with discovery by
/// MAC only (a vector is hooked at the first open of one of its files).
fn boot() -> Sim {
    let sim = boot_fs(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    });
    load(
        &sim,
        Tunables {
            kauth: false,
            unload_wait_ms: 100,
            ..Tunables::default()
        },
    )
    .expect("load");
    sim
}

/// `p` opens, maps, faults, unmaps and closes `path`.
fn use_file(p: &Proc, path: &str) {
    let fd = p.open(path).expect("open");
    let a = p
        .mmap(fd, 4 * PAGE, prot::READ, map_flags::SHARED, 0)
        .expect("map");
    p.touch(a, 1).expect("fault");
    p.munmap(a).expect("unmap");
    p.close(fd).expect("close");
}

/// MMAP records of `pid` among `recs`.
fn mmaps_of(recs: &[maptrace_abi::decode::Record], pid: u32) -> usize {
    recs.iter()
        .filter(|r| r.kind == EventKind::Mmap && r.pid == pid)
        .count()
}

/// Another kext's filesystem type `fs`, alone of its kind, registered
/// once; returns its vector's address.
fn lone_type(sim: &Sim, fs: &str) -> usize {
    sim.add_fs(fs).expect("vfs_fsadd")
}

#[test]
fn a_lone_filesystem_type_mounted_and_ejected_again_and_again_stays_traced() {
    let sim = boot();
    let vector = lone_type(&sim, "msdos");
    let mut dec = Decoder::new();
    for round in 0..ROUNDS {
        sim.mount("msdos", STICK).expect("mount");
        sim.add_file(FILE, 4 * PAGE).expect("file");
        let p = sim.spawn("app", 501);
        use_file(&p, FILE);
        assert!(vector_hooked(&sim, vector), "round {round}: hooked");
        let recs = drain(&sim, &mut dec);
        assert!(mmaps_of(&recs, p.pid() as u32) > 0, "round {round}: traced");
        p.exit();
        sim.unmount(STICK, false).expect("eject");
        assert!(!vector_hooked(&sim, vector), "round {round}: unhooked");
    }
    // A type seen for the first time after all those ejects is hooked too.
    let other = lone_type(&sim, "exfat");
    sim.mount("exfat", "/Volumes/other").expect("mount");
    sim.add_file("/Volumes/other/g", 4 * PAGE).expect("file");
    use_file(&sim.spawn("app", 501), "/Volumes/other/g");
    assert!(vector_hooked(&sim, other), "a new type is still hooked");
    let s = stats(&sim, Cred::Root);
    assert_eq!(s.errors, 0, "no table refusal");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn refused_unmounts_by_a_user_leave_the_mount_hooked() {
    // The MAC check runs before safedounmount's owner-or-root test, so a
    // user's unmount(2) of a volume it does not own reaches the shim and
    // then fails with EPERM: the volume stays mounted and must stay hooked.
    let sim = boot();
    let vector = lone_type(&sim, "msdos");
    sim.mount("msdos", STICK).expect("mount by root");
    sim.add_file(FILE, 4 * PAGE).expect("file");
    let user = sim.spawn("user", 501);
    use_file(&user, FILE);
    let mut dec = Decoder::new();
    let _ = drain(&sim, &mut dec);
    for round in 0..ROUNDS {
        assert_eq!(
            user.unmount(STICK, false).map_err(|e| e.0),
            Err(EPERM),
            "round {round}: not root, not the owner"
        );
        assert!(
            vector_hooked(&sim, vector),
            "round {round}: still hooked after the refused unmount"
        );
        use_file(&user, FILE);
        let recs = drain(&sim, &mut dec);
        assert!(
            mmaps_of(&recs, user.pid() as u32) > 0,
            "round {round}: traced"
        );
    }
    let other = lone_type(&sim, "exfat");
    sim.mount("exfat", "/Volumes/other").expect("mount");
    sim.add_file("/Volumes/other/g", 4 * PAGE).expect("file");
    use_file(&user, "/Volumes/other/g");
    assert!(vector_hooked(&sim, other), "a new type is still hooked");
    assert_eq!(stats(&sim, Cred::Root).errors, 0);
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn the_owner_of_a_mount_unhooks_it_at_its_unmount() {
    // safedounmount lets the user that mounted a volume unmount it: its
    // unmount check restores the vector, as root's does.
    let sim = boot();
    let vector = lone_type(&sim, "msdos");
    let user = sim.spawn("user", 501);
    user.mount("msdos", STICK).expect("mount by the user");
    sim.add_file(FILE, 4 * PAGE).expect("file");
    use_file(&user, FILE);
    assert!(vector_hooked(&sim, vector));
    assert_eq!(
        sim.spawn("other", 502)
            .unmount(STICK, false)
            .map_err(|e| e.0),
        Err(EPERM)
    );
    assert!(vector_hooked(&sim, vector), "another user's attempt");
    user.unmount(STICK, false).expect("the owner unmounts");
    assert!(
        !vector_hooked(&sim, vector),
        "restored at the unmount check"
    );
    sim.remove_fs("msdos").expect("vfs_fsremove");
    sim.unload_kext().expect("unload");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

/// Filesystem `fs` of another kext mounted on `on` with one file `file`,
/// traced, then unmounted WITHOUT the MAC check (vfs_unmountbyfsid, a
/// submount, vfs_unmountall) and removed: vfs_fsremove frees its vector
/// while our table still holds it. Returns the freed vector's address.
fn trace_then_remove_unchecked(sim: &Sim, fs: &str) -> usize {
    let vector = lone_type(sim, fs);
    sim.mount(fs, "/Volumes/x").expect("mount");
    sim.add_file("/Volumes/x/f", 4 * PAGE).expect("file");
    let p = sim.spawn("app", 501);
    use_file(&p, "/Volumes/x/f");
    assert!(vector_hooked(sim, vector));
    p.exit();
    sim.unmount_unchecked("/Volumes/x", false)
        .expect("unmount without MAC");
    sim.remove_fs(fs).expect("vfs_fsremove");
    vector
}

/// Mounts `fs` (its vector at `vector`) on /Volumes/y and maps a file of
/// it; asserts the map is traced and the vector hooked; then unloads.
fn reused_vector_is_traced_and_unload_goes_through(sim: &Sim, fs: &str, vector: usize) {
    sim.mount(fs, "/Volumes/y").expect("mount");
    sim.add_file("/Volumes/y/g", 4 * PAGE).expect("file");
    let mut dec = Decoder::new();
    let _ = drain(sim, &mut dec);
    let p = sim.spawn("app", 501);
    use_file(&p, "/Volumes/y/g");
    let recs = drain(sim, &mut dec);
    assert!(vector_hooked(sim, vector), "the reused vector is hooked");
    assert!(mmaps_of(&recs, p.pid() as u32) > 0, "its maps are traced");
    assert_eq!(stats(sim, Cred::Root).errors, 0);
    assert_eq!(sim.unload_kext(), Ok(()), "{:?}", sim.log_lines());
    assert!(!vector_hooked(sim, vector), "its entries are back");
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn another_filesystem_at_a_vector_freed_without_the_unmount_check_is_hooked() {
    // The stale entry's fingerprint (lookup, reclaim) is not the new
    // filesystem's: it is dropped, never written, and the new vector hooked.
    let sim = boot();
    let old = trace_then_remove_unchecked(&sim, "xfs");
    let new = lone_type(&sim, "yfs");
    assert_eq!(new, old, "vfs_fsadd reuses the freed vector's memory");
    reused_vector_is_traced_and_unload_goes_through(&sim, "yfs", new);
}

#[test]
fn the_same_filesystem_added_again_at_its_freed_vector_is_hooked_again() {
    // Same kext, same code: the table's originals still hold, so the
    // entries get our trampolines again.
    let sim = boot();
    let old = trace_then_remove_unchecked(&sim, "xfs");
    let new = lone_type(&sim, "xfs");
    assert_eq!(new, old, "vfs_fsadd reuses the freed vector's memory");
    reused_vector_is_traced_and_unload_goes_through(&sim, "xfs", new);
}

#[test]
fn unload_after_another_filesystem_reused_a_stale_vector_goes_through() {
    // Only opened, never mapped: the old shim counted the new filesystem's
    // entries as another kext's hooks and refused every unload.
    let sim = boot();
    let old = trace_then_remove_unchecked(&sim, "xfs");
    assert_eq!(lone_type(&sim, "yfs"), old);
    sim.mount("yfs", "/Volumes/y").expect("mount");
    sim.add_file("/Volumes/y/g", 4 * PAGE).expect("file");
    let p = sim.spawn("app", 501);
    let fd = p.open("/Volumes/y/g").expect("open");
    let r = sim.unload_kext();
    p.close(fd).expect("close");
    assert_eq!(r, Ok(()), "{:?}", sim.log_lines());
    assert!(!vector_hooked(&sim, old));
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

/// Every word of the vector at `addr`.
fn vector_words(sim: &Sim, addr: usize) -> Vec<usize> {
    let n = sim
        .kernel()
        .vfs
        .live_vectors()
        .iter()
        .find(|(a, _)| *a == addr)
        .map_or(0, |(_, info)| info.originals.len());
    (0..n)
        .map(|i| maptrace_sim::vfs::word(addr + i * 8).load(Ordering::Acquire))
        .collect()
}

#[test]
fn another_kext_hooked_over_all_our_entries_is_not_taken_for_a_new_filesystem() {
    // None of our trampolines is left in the vector, but its lookup and
    // reclaim are still the filesystem's: another kext's hooks, not a new
    // filesystem. Recording them as originals would make every call come
    // back to us without end; the shim leaves them alone.
    let sim = boot();
    let vector = lone_type(&sim, "msdos");
    sim.mount("msdos", STICK).expect("mount");
    sim.add_file(FILE, 4 * PAGE).expect("file");
    let p = sim.spawn("app", 501);
    use_file(&p, FILE);
    let other = sim.foreign_hook_all(FILE).expect("the other kext hooks");
    let words = vector_words(&sim, vector);
    let mut dec = Decoder::new();
    let _ = drain(&sim, &mut dec);
    use_file(&p, FILE);
    assert_eq!(vector_words(&sim, vector), words, "left alone");
    let recs = drain(&sim, &mut dec);
    assert!(mmaps_of(&recs, p.pid() as u32) > 0, "traced under it");
    assert_eq!(other.unhook(&sim), 0, "our trampolines under its hooks");
    assert!(vector_hooked(&sim, vector));
    assert_eq!(sim.unload_kext(), Ok(()), "{:?}", sim.log_lines());
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn an_interposer_over_every_entry_is_not_taken_for_a_new_filesystem() {
    // Another kext replaces lookup and reclaim too, so neither entry the
    // shim fingerprints a vector by is the filesystem's any more; but the
    // mount is still of the type the vector was hooked from, so it is no
    // new filesystem. Taking it for one would record the interposer's
    // trampolines as originals, which forward to ours: every map would go
    // round the two without end (a kernel stack overflow).
    let sim = boot();
    let vector = lone_type(&sim, "msdos");
    sim.mount("msdos", STICK).expect("mount");
    sim.add_file(FILE, 4 * PAGE).expect("file");
    let p = sim.spawn("app", 501);
    use_file(&p, FILE);
    let other = sim
        .foreign_interpose(FILE)
        .expect("the other kext interposes");
    let words = vector_words(&sim, vector);
    let mut dec = Decoder::new();
    let _ = drain(&sim, &mut dec);
    use_file(&p, FILE);
    assert_eq!(vector_words(&sim, vector), words, "left alone");
    let recs = drain(&sim, &mut dec);
    assert!(mmaps_of(&recs, p.pid() as u32) > 0, "traced under it");
    assert_eq!(other.unhook(&sim), 0, "our trampolines under its hooks");
    assert!(vector_hooked(&sim, vector));
    assert_eq!(sim.unload_kext(), Ok(()), "{:?}", sim.log_lines());
    let v = sim.take_violations();
    assert!(v.is_empty(), "{v:#?}");
}
