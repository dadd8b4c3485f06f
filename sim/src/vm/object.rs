//! A file's VM object as fault clustering sees it (`vm_object_cluster_size`,
//! `vm_fault_is_sequential`).

/// `UPL_IOSTREAMING` (osfmk/mach/memory_object_types.h:646,
/// xnu-11417.101.15): the fault is part of a sequential stream.
pub const UPL_IOSTREAMING: i32 = 0x100;

/// `MAX_SEQUENTIAL_RUN` (osfmk/vm/vm_fault.c:427): the detector's cap.
const MAX_SEQUENTIAL_RUN: i64 = 1 << 30;

/// A file's VM object as fault clustering sees it: `last_alloc`,
/// `sequential` (pages, negative for a reverse run), `pages_created` and
/// `pages_used` of speculative pages, and which resident pages are still
/// speculative (brought in by a cluster, not yet touched).
#[derive(Debug, Default)]
pub struct VmObject {
    last_alloc: u64,
    sequential: i64,
    pages_created: u64,
    pages_used: u64,
    speculative: std::collections::BTreeSet<u64>,
}

impl VmObject {
    /// `vm_object_cluster_size` (osfmk/vm/vm_object.c:6627-6979,
    /// xnu-11417.101.15) for a default-behaviour fault on `page` with
    /// plenty of free memory: `[start, end)` in pages and whether the read
    /// streams. The pre-heat starts at the minimum (32 KiB, halved on an
    /// SSD), centred on the fault; a sequential run of 3 pages or more
    /// reads ahead only (run + 1 page, UPL_IOSTREAMING); later it grows
    /// with the share of speculative pages used, up to the maximum (1 MiB,
    /// / 8 on an SSD). It never bridges resident pages and stays inside the
    /// map entry's `[lo_offset, hi_offset)` (vm_map.c:14875-14877) and EOF.
    pub fn cluster(
        &self,
        c: &crate::kernel::Config,
        page: u64,
        (lo, hi): (u64, u64),
        file_pages: u64,
        resident: &std::collections::BTreeSet<u64>,
    ) -> (u64, u64, bool) {
        let ps = c.page_size;
        let (mut min_ph, mut max_ph) = (32 << 10, 1 << 20);
        if c.ssd {
            min_ph /= 2;
            max_ph /= 8;
        }
        let min_ph = (min_ph / ps * ps).max(ps);
        let max_ph = (max_ph / ps * ps).clamp(ps, 1 << 20);
        // vnode_pager_data_request asks for MAX_UPL_TRANSFER_BYTES.
        let max_length = max_ph;
        let one = (page, page + 1, false);
        if max_length <= ps || page >= file_pages {
            return one;
        }
        let (mut look_behind, mut look_ahead, mut streaming) = (true, true, false);
        let run = self.sequential.unsigned_abs() * ps;
        let mut pre = if run >= 3 * ps {
            if self.sequential > 0 {
                look_behind = false;
            } else {
                look_ahead = false;
            }
            streaming = true;
            run + ps
        } else if self.pages_created < 20 * (min_ph / ps) {
            // Prime the pump.
            min_ph
        } else {
            let p = max_length * self.pages_used / self.pages_created.max(1);
            if p < min_ph {
                min_ph
            } else {
                p.next_multiple_of(ps)
            }
        };
        pre = pre.min(max_length);
        let orig = page * ps;
        let object_size = file_pages * ps;
        let mut target = orig;
        let tail;
        if look_ahead {
            if look_behind {
                let head = pre / 2 / ps * ps;
                target = orig.saturating_sub(head);
            }
            if target + pre > object_size {
                pre = object_size - target;
            }
            tail = pre - (orig - target) - ps;
        } else {
            pre = pre.min(target);
            tail = 0;
        }
        if pre <= ps {
            return (page, page + 1, streaming);
        }
        let (mut start, mut end) = (page, page + 1);
        if look_behind {
            let mut head = (pre - tail - ps) / ps;
            while head > 0 && start > lo && !resident.contains(&(start - 1)) {
                start -= 1;
                head -= 1;
            }
        }
        if look_ahead {
            let mut tail = tail / ps;
            while tail > 0 && end < hi && !resident.contains(&end) {
                end += 1;
                tail -= 1;
            }
        }
        let max_pages = max_length / ps;
        if end - start > max_pages {
            end = start + max_pages;
        }
        (start, end, streaming)
    }

    /// After a page-in of `[start, end)` for `page`: the other pages are
    /// new speculative pages (`pages_created`, vm_resident.c:5710), and the
    /// fault feeds the detector (vm_fault.c:2553).
    pub fn paged_in(&mut self, page: u64, start: u64, end: u64) {
        self.speculative.remove(&page);
        for p in (start..end).filter(|p| *p != page) {
            if self.speculative.insert(p) {
                self.pages_created += 1;
            }
        }
        self.is_sequential(page);
    }

    /// A touch of a resident page: its first use as a speculative page
    /// counts (`pages_used`) and feeds the detector.
    pub fn consume(&mut self, page: u64) {
        if self.speculative.remove(&page) {
            self.pages_used += 1;
            self.is_sequential(page);
        }
    }

    /// `vm_fault_is_sequential` for VM_BEHAVIOR_DEFAULT
    /// (osfmk/vm/vm_fault.c:440-545, xnu-11417.101.15), counted in pages
    /// where XNU counts bytes of pages.
    fn is_sequential(&mut self, page: u64) {
        const P: i64 = 1;
        if page == self.last_alloc {
            return;
        }
        if page != 0 && self.last_alloc == page - 1 {
            if self.sequential < 0 {
                self.sequential = 0;
            }
            if self.sequential < MAX_SEQUENTIAL_RUN {
                self.sequential += P;
            }
        } else if self.last_alloc != 0 && self.last_alloc == page + 1 {
            if self.sequential > 0 {
                self.sequential = 0;
            }
            if self.sequential > -MAX_SEQUENTIAL_RUN {
                self.sequential -= P;
            }
        } else {
            self.sequential = 0;
        }
        self.last_alloc = page;
    }
}
