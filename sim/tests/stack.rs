//! Kernel-stack budgets at run time (src/stack.rs): kext code deeper than its
//! budget is a `stack.*_budget` contract violation; the kernel's own frames
//! below a hook (the original vnode op, a KPI) are not the kext's.

use std::ffi::c_void;

use maptrace_sim::context::Frame;
use maptrace_sim::stack::{ENABLED, ENTRY_BUDGET, HOOK_BUDGET};
use maptrace_sim::{Config, Sim, Violation, ViolationPolicy, Vop, xnu};

/// Uses about N bytes of stack.
#[inline(never)]
fn use_stack<const N: usize>() -> u8 {
    let mut buf = [0u8; N];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = i as u8;
    }
    std::hint::black_box(&mut buf);
    buf[N / 2]
}

extern "C" fn deep_start(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    std::hint::black_box(use_stack::<6000>());
    0
}

extern "C" fn modest_start(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    std::hint::black_box(use_stack::<3000>());
    0
}

extern "C" fn noop(_ki: *mut xnu::kmod_info, _d: *mut c_void) -> xnu::kern_return_t {
    0
}

fn boot() -> Sim {
    Sim::boot(Config {
        policy: ViolationPolicy::Collect,
        ..Config::default()
    })
}

fn load(sim: &Sim, start: xnu::kmod_start_func_t) {
    // SAFETY: kmod_info is plain data; all-zero is valid.
    let mut ki: xnu::kmod_info = unsafe { std::mem::zeroed() };
    ki.start = start;
    ki.stop = Some(noop);
    // SAFETY: a leaked kmod_info whose routines follow the kmod contract.
    unsafe { sim.load_kext(Box::into_raw(Box::new(ki))) }.unwrap();
}

fn stack_rules(sim: &Sim) -> Vec<(&'static str, String)> {
    sim.take_violations()
        .into_iter()
        .filter_map(|v| match v {
            Violation::Contract { rule, detail } if rule.starts_with("stack.") => {
                Some((rule, detail))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_start_routine_past_4_kib_is_a_violation() {
    if !ENABLED {
        return;
    }
    let sim = boot();
    load(&sim, Some(deep_start));
    let v = stack_rules(&sim);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].0, "stack.entry_budget");
    assert!(
        v[0].1.contains(&format!("budget {ENTRY_BUDGET}")),
        "{}",
        v[0].1
    );
}

#[test]
fn a_start_routine_within_4_kib_passes() {
    if !ENABLED {
        return;
    }
    let sim = boot();
    load(&sim, Some(modest_start));
    assert_eq!(stack_rules(&sim), []);
}

#[test]
fn a_hook_past_1_kib_is_a_violation_but_the_original_below_it_is_not() {
    if !ENABLED {
        return;
    }
    let sim = boot();
    load(&sim, Some(noop));
    let k = sim.kernel();
    k.kext_call(Frame::VnopHook(Vop::Pagein), use_stack::<2000>);
    let v = stack_rules(&sim);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].0, "stack.hook_budget");
    assert!(
        v[0].1.contains(&format!("budget {HOOK_BUDGET}")),
        "{}",
        v[0].1
    );
    // A hook calling a deep original vnode op: the kernel's frames below it
    // are the kernel's budget, not the kext's.
    k.kext_call(Frame::VnopHook(Vop::Pagein), || {
        maptrace_sim::context::with_frame(Frame::Original, use_stack::<6000>)
    });
    assert_eq!(stack_rules(&sim), []);
}

#[test]
fn a_benchmark_can_turn_the_hook_meter_off() {
    if !ENABLED {
        return;
    }
    let sim = Sim::boot(Config {
        policy: ViolationPolicy::Collect,
        stack_meter: false,
        ..Config::default()
    });
    load(&sim, Some(noop));
    // Off: a hook past its budget goes unmeasured (benchmarks time the kext,
    // not the meter's painting).
    sim.kernel()
        .kext_call(Frame::VnopHook(Vop::Pagein), use_stack::<2000>);
    assert_eq!(stack_rules(&sim), []);
}
