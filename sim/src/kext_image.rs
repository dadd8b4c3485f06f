//! Addresses the kext's own code and data live at, and the stacks its code
//! ran on: kernel addresses as much as the heap arena's, which must never
//! reach an output either.
//!
//! The kext's text and globals are part of this process (the shim is linked
//! in), so the simulator records anchors, pointers the kext handed the
//! kernel (its `kmod_info` and routines, MAC conf and ops, sysctl OIDs and
//! handlers, kauth callbacks, filesystem entries), and resolves each to the
//! mapping that holds it. A thread's stack is recorded the first time it
//! enters kext code in a boot. On Linux the mapping comes from
//! `/proc/self/maps`; elsewhere a conservative window around the anchor.

use std::cell::Cell;
use std::ops::Range;
use std::sync::Mutex;

use crate::lock;

/// Window recorded around an anchor when the mapping cannot be read.
const FALLBACK_SPAN: u64 = 1 << 20;

/// The kext's image and stack ranges.
#[derive(Default)]
pub struct KextImage {
    /// Code and data pointers the kext handed the kernel.
    anchors: Mutex<Vec<u64>>,
    /// Stack mappings kext code ran on.
    stacks: Mutex<Vec<Range<u64>>>,
}

thread_local! {
    /// The boot whose kext this thread's stack was last recorded for.
    static STACK_NOTED: Cell<u64> = const { Cell::new(u64::MAX) };
}

impl KextImage {
    /// Records a pointer into the kext's text or data (0 is ignored).
    pub fn note(&self, addr: usize) {
        if addr == 0 {
            return;
        }
        let mut a = lock(&self.anchors);
        if !a.contains(&(addr as u64)) {
            a.push(addr as u64);
        }
    }

    /// Records the current thread's stack, once per thread and boot: called
    /// at every entry into kext code.
    #[inline(always)]
    pub fn note_stack(&self, boot: u64) {
        if STACK_NOTED.with(Cell::get) != boot {
            self.note_new_stack(boot);
        }
    }

    /// `note_stack`'s first call on a thread in a boot, out of line.
    #[cold]
    #[inline(never)]
    fn note_new_stack(&self, boot: u64) {
        STACK_NOTED.with(|c| c.set(boot));
        let marker = 0u8;
        let sp = std::hint::black_box(&raw const marker) as u64;
        let range = mapping_of(sp);
        let mut s = lock(&self.stacks);
        if !s.iter().any(|r| r.contains(&sp)) {
            s.push(range);
        }
    }

    /// Every recorded range (text, data, stacks), sorted and merged.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        let maps = read_maps();
        let mut v: Vec<Range<u64>> = lock(&self.anchors)
            .iter()
            .map(|a| resolve(&maps, *a))
            .collect();
        v.extend(lock(&self.stacks).iter().cloned());
        v.sort_by_key(|r| r.start);
        let mut out: Vec<Range<u64>> = Vec::new();
        for r in v {
            match out.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        out
    }
}

/// The process's mappings, empty when they cannot be read.
fn read_maps() -> Vec<Range<u64>> {
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some(u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?)
        })
        .collect()
}

fn resolve(maps: &[Range<u64>], addr: u64) -> Range<u64> {
    maps.iter()
        .find(|r| r.contains(&addr))
        .cloned()
        .unwrap_or_else(|| {
            let base = addr & !0xfff;
            base.saturating_sub(FALLBACK_SPAN)..base.saturating_add(FALLBACK_SPAN)
        })
}

/// The mapping holding `addr`.
pub fn mapping_of(addr: u64) -> Range<u64> {
    resolve(&read_maps(), addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    static GLOBAL: u64 = 7;

    #[test]
    fn anchors_resolve_to_their_mappings_and_stacks_are_noted_once() {
        let img = KextImage::default();
        img.note(&raw const GLOBAL as usize);
        img.note(anchors_resolve_to_their_mappings_and_stacks_are_noted_once as *const () as usize);
        img.note_stack(1);
        img.note_stack(1);
        let local = 0u64;
        let r = img.ranges();
        let inside = |v: u64| r.iter().any(|x| x.contains(&v));
        assert!(inside(&raw const GLOBAL as u64), "{r:x?}");
        assert!(inside(&raw const local as u64), "the stack: {r:x?}");
        assert_eq!(lock(&img.stacks).len(), 1);
    }
}
