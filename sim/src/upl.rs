//! UPLs (universal page lists): the busy pages `vnode_pagein` hands to a
//! filesystem's VNOP_PAGEIN. Whoever gets a UPL must commit or abort every
//! page of it; a page left busy is never woken, so every thread that faults
//! on it waits forever (a hang the simulator reports instead of hanging).
//!
//! XNU (xnu-11417.121.6): `bsd/vm/vnode_pager.c` `vnode_pagein` creates the
//! UPL for a filesystem without `VFS_TBLVNOP_PAGEINV2` and, after
//! VNOP_PAGEIN failed, aborts it itself only for `EAGAIN` (`:811`) and
//! `EPERM` (`:814`): "Usually this UPL will be aborted/committed by the
//! lower cluster layer." Every other error leaves it to the callee.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::lock;

/// `UPL_ABORT_RESTART` (osfmk/mach/memory_object_types.h, xnu-11417.121.6).
pub const UPL_ABORT_RESTART: i32 = 0x1;
/// `UPL_ABORT_ERROR`.
pub const UPL_ABORT_ERROR: i32 = 0x4;
/// `UPL_ABORT_FREE_ON_EMPTY`.
pub const UPL_ABORT_FREE_ON_EMPTY: i32 = 0x8;
/// `UPL_NOCOMMIT` (a VNOP_PAGEIN `a_flags` bit: the caller commits).
pub const UPL_NOCOMMIT: i32 = 0x2;

/// One live UPL: its size and the pages still busy.
#[derive(Debug)]
struct Upl {
    size: u64,
    busy: BTreeSet<u64>,
}

/// The live UPLs, by address.
#[derive(Default)]
pub struct Upls {
    live: Mutex<HashMap<usize, Upl>>,
}

/// Why a commit or abort was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UplError {
    /// Not a live UPL (never created, or already released and freed).
    Unknown,
    /// The range is not inside the UPL.
    OutOfRange,
}

impl Upls {
    /// A UPL of `size` bytes at `addr`, every page busy.
    pub fn create(&self, addr: usize, size: u64, page: u64) {
        let busy = (0..size.div_ceil(page)).collect();
        lock(&self.live).insert(addr, Upl { size, busy });
    }

    /// Commits or aborts `[offset, offset + size)`: those pages are no
    /// longer busy.
    pub fn release_range(
        &self,
        addr: usize,
        offset: u64,
        size: u64,
        page: u64,
    ) -> Result<(), UplError> {
        let mut live = lock(&self.live);
        let upl = live.get_mut(&addr).ok_or(UplError::Unknown)?;
        let end = offset.checked_add(size).ok_or(UplError::OutOfRange)?;
        if end > upl.size {
            return Err(UplError::OutOfRange);
        }
        if size == 0 {
            return Ok(());
        }
        let (first, last) = (offset / page, (end - 1) / page);
        upl.busy.retain(|p| *p < first || *p > last);
        Ok(())
    }

    /// Pages of the UPL at `addr` still busy (0 for an unknown UPL).
    pub fn busy(&self, addr: usize) -> usize {
        lock(&self.live).get(&addr).map_or(0, |u| u.busy.len())
    }

    /// Forgets the UPL at `addr` (its pages were released or reported).
    pub fn remove(&self, addr: usize) {
        lock(&self.live).remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_release_pages_and_bad_ranges_are_refused() {
        let u = Upls::default();
        u.create(0x1000, 4 * 4096, 4096);
        assert_eq!(u.busy(0x1000), 4);
        assert_eq!(u.release_range(0x1000, 4096, 8192, 4096), Ok(()));
        assert_eq!(u.busy(0x1000), 2);
        assert_eq!(
            u.release_range(0x1000, 3 * 4096, 8192, 4096),
            Err(UplError::OutOfRange)
        );
        assert_eq!(u.release_range(0x1000, 0, 0, 4096), Ok(()), "nothing");
        assert_eq!(u.busy(0x1000), 2);
        assert_eq!(
            u.release_range(0x2000, 0, 4096, 4096),
            Err(UplError::Unknown)
        );
        assert_eq!(u.release_range(0x1000, 0, 4 * 4096, 4096), Ok(()));
        assert_eq!(u.busy(0x1000), 0);
        u.remove(0x1000);
        assert_eq!(
            u.release_range(0x1000, 0, 4096, 4096),
            Err(UplError::Unknown)
        );
    }
}
