//! Stacking filesystems (nullfs, bindfs) with no kext loaded: a mount
//! mirrors a directory of another mount; its VNOP_MMAP, VNOP_MNOMAP and
//! VNOP_CLOSE reach the lower file's filesystem, its page-ins read the lower
//! file (bsd/miscfs/nullfs/null_vnops.c, bsd/miscfs/bindfs/bind_vnops.c,
//! xnu-11417.121.6).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use maptrace_sim::vfs::word;
use maptrace_sim::{
    Config, Platform, Sim, SimError, TraceOp, Violation, ViolationPolicy, map_flags, prot, xnu,
};

const PS: u64 = 4096;
const LOWER: &str = "/Volumes/Data/d/f.bin";
const UPPER: &str = "/Volumes/null/f.bin";
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;

fn sim(fstype: &str) -> Sim {
    let sim = Sim::boot(Config::for_platform(Platform::IntelSsd));
    sim.mount("apfs", "/").unwrap();
    sim.mount("hfs", "/Volumes/Data").unwrap();
    sim.add_file(LOWER, 16 * PS).unwrap();
    sim.mount_over(fstype, "/Volumes/Data/d", "/Volumes/null")
        .unwrap();
    sim
}

fn ops_on(sim: &Sim, op: TraceOp, path: &str) -> usize {
    sim.trace()
        .iter()
        .filter(|e| e.op == op && e.path == path)
        .count()
}

#[test]
fn maps_reach_the_lower_file_and_page_ins_read_it() {
    for fstype in ["nullfs", "bindfs"] {
        let sim = sim(fstype);
        let p = sim.spawn("reader", 501);
        let fd = p.open(UPPER).unwrap();
        // null_nodeget's reference on the lower vnode; the open's is the upper's.
        assert_eq!(sim.counts(LOWER).unwrap().usecount, 1, "{fstype}");
        assert_eq!(sim.counts(UPPER).unwrap().usecount, 1, "{fstype}");
        assert_ne!(sim.vnode_addr(LOWER), sim.vnode_addr(UPPER));

        let a = p
            .mmap(fd, 16 * PS, prot::READ, map_flags::SHARED, 0)
            .unwrap();
        // ubc_map runs on the upper vnode (twice for MAP_SHARED); each of
        // its VNOP_MMAPs is forwarded, so the lower filesystem sees both.
        assert_eq!(ops_on(&sim, TraceOp::Mmap, LOWER), 2, "{fstype}");
        assert_eq!(ops_on(&sim, TraceOp::Mmap, UPPER), 0, "{fstype}");
        assert!(sim.counts(UPPER).unwrap().mapped);
        assert!(!sim.counts(LOWER).unwrap().mapped);
        assert_eq!(sim.counts(UPPER).unwrap().usecount, 2, "open + map");

        let t = p.touch(a, 16 * PS).unwrap();
        assert!(t.pageins > 0);
        assert_eq!(
            ops_on(&sim, TraceOp::Pagein, UPPER),
            t.pageins as usize,
            "{fstype}: the upper vnode's own page-ins"
        );
        assert_eq!(
            ops_on(&sim, TraceOp::Pagein, LOWER),
            0,
            "{fstype}: the lower file is read, not paged in"
        );
        assert!(
            sim.evict(LOWER).unwrap() > 0,
            "the read filled the lower file's cache"
        );

        p.munmap(a).unwrap();
        assert_eq!(ops_on(&sim, TraceOp::Mnomap, LOWER), 1, "{fstype}");
        assert_eq!(ops_on(&sim, TraceOp::Mnomap, UPPER), 0, "{fstype}");
        p.close(fd).unwrap();
        assert_eq!(ops_on(&sim, TraceOp::Close, LOWER), 1, "{fstype}");
        assert_eq!(sim.counts(UPPER).unwrap().usecount, 0);
        assert_eq!(
            sim.counts(LOWER).unwrap().usecount,
            1,
            "nullfs keeps its ref"
        );
        assert_eq!(
            sim.counts(LOWER).unwrap().iocount,
            0,
            "forwarding puts its iocount"
        );

        // Unmounting the stacking mount reclaims its vnodes: null_reclaim
        // releases the lower reference.
        sim.unmount("/Volumes/null", false).unwrap();
        assert_eq!(sim.counts(LOWER).unwrap().usecount, 0, "{fstype}");
        sim.check_balanced().unwrap();
    }
}

#[test]
fn stacking_mounts_refuse_bad_input() {
    let sim = sim("nullfs");
    assert_eq!(
        sim.mount("nullfs", "/Volumes/other"),
        Err(SimError(EINVAL)),
        "nullfs needs a directory to mirror"
    );
    assert_eq!(
        sim.mount_over("hfs", "/Volumes/Data", "/Volumes/other"),
        Err(SimError(EINVAL)),
        "hfs does not stack"
    );
    assert_eq!(
        sim.mount_over("bindfs", "d", "/Volumes/other"),
        Err(SimError(ENOENT)),
        "a relative directory"
    );
    assert_eq!(
        sim.mount_over("bindfs", "/Volumes/loop/d", "/Volumes/loop"),
        Err(SimError(EINVAL)),
        "a mount mirroring itself"
    );
    let p = sim.spawn("reader", 501);
    assert_eq!(p.open("/Volumes/null/absent"), Err(SimError(ENOENT)));
    // A file added through the mirror lives below it.
    sim.add_file("/Volumes/null/g.bin", PS).unwrap();
    let fd = p.open("/Volumes/Data/d/g.bin").unwrap();
    assert_eq!(p.file_size(fd), Some(PS));
}

/// The originals a fake kext's VNOP_MMAP hooks forward to.
static UPPER_MMAP: AtomicUsize = AtomicUsize::new(0);
static LOWER_MMAP: AtomicUsize = AtomicUsize::new(0);

fn call_original(original: &AtomicUsize, args: *mut c_void) -> c_int {
    let f = original.load(Ordering::Acquire);
    // SAFETY: the filesystem's own VNOP_MMAP, saved before the hook went in.
    let f: extern "C" fn(*mut c_void) -> c_int = unsafe { std::mem::transmute(f) };
    f(args)
}

extern "C" fn upper_mmap_hook(args: *mut c_void) -> c_int {
    call_original(&UPPER_MMAP, args)
}

extern "C" fn lower_mmap_hook(args: *mut c_void) -> c_int {
    call_original(&LOWER_MMAP, args)
}

extern "C" fn noop(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    0
}

#[test]
fn a_kext_hooking_both_vectors_nests_its_hooks() {
    let sim = sim("nullfs");
    sim.set_violation_policy(ViolationPolicy::Collect);
    // SAFETY: kmod_info is plain data; all-zero is valid.
    let mut ki: xnu::kmod_info = unsafe { std::mem::zeroed() };
    ki.start = Some(noop);
    ki.stop = Some(noop);
    // SAFETY: a leaked kmod_info whose routines follow the kmod contract.
    unsafe { sim.load_kext(Box::into_raw(Box::new(ki))) }.unwrap();
    let vfs = &sim.kernel().vfs;
    let slot = |fs: &str| vfs.fstype(fs).unwrap().1 + vfs.offsets.mmap * 8;
    let hooks = [
        (
            slot("nullfs"),
            &UPPER_MMAP,
            upper_mmap_hook as *const () as usize,
        ),
        (
            slot("hfs"),
            &LOWER_MMAP,
            lower_mmap_hook as *const () as usize,
        ),
    ];
    for (slot, original, hook) in hooks {
        original.store(word(slot).load(Ordering::Acquire), Ordering::Release);
        word(slot).store(hook, Ordering::Release);
    }

    let p = sim.spawn("reader", 501);
    let fd = p.open(UPPER).unwrap();
    p.mmap(fd, PS, prot::READ, map_flags::PRIVATE, 0).unwrap();
    let nested: Vec<String> = sim
        .take_violations()
        .into_iter()
        .filter_map(|v| match v {
            Violation::Contract {
                rule: "stack.nested_hooks",
                detail,
            } => Some(detail),
            _ => None,
        })
        .collect();
    assert_eq!(nested.len(), 1, "one VNOP_MMAP, two hooks: {nested:?}");
    assert!(nested[0].contains(LOWER), "{}", nested[0]);

    for (slot, original, _) in hooks {
        word(slot).store(original.load(Ordering::Acquire), Ordering::Release);
    }
    p.exit();
    sim.unload_kext().unwrap();
}
