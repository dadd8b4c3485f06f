//! UPL KPIs.

use std::ffi::c_int;

use super::k;
use crate::upl::UplError;
use crate::violation::Violation;
use crate::xnu;

#[unsafe(no_mangle)]
extern "C" fn ubc_upl_abort_range(
    upl: xnu::upl_t,
    offset: xnu::upl_offset_t,
    size: xnu::upl_size_t,
    flags: c_int,
) -> c_int {
    let k = k("ubc_upl_abort_range");
    let r = k.upls.release_range(
        upl as usize,
        u64::from(offset),
        u64::from(size),
        k.config.page_size,
    );
    match r {
        Ok(()) => {
            let _ = flags;
            0
        }
        // bsd/kern/ubc_subr.c ubc_upl_abort_range (xnu-11417.121.6) takes the
        // UPL as live: one already committed, aborted or freed is a use after
        // free (FREE_ON_EMPTY deallocated it).
        Err(UplError::Unknown) => {
            k.violation(Violation::Contract {
                rule: "ubc_upl_abort_range.live_upl",
                detail: format!("ubc_upl_abort_range({:#x}) of no live UPL", upl as usize),
            });
            KERN_FAILURE
        }
        // osfmk/vm/vm_upl.c upl_abort_range refuses a range past the UPL's end.
        Err(UplError::OutOfRange) => {
            k.violation(Violation::Contract {
                rule: "ubc_upl_abort_range.in_range",
                detail: format!(
                    "ubc_upl_abort_range({:#x}, {offset}, {size}) outside the UPL",
                    upl as usize
                ),
            });
            KERN_FAILURE
        }
    }
}

/// `KERN_FAILURE` (osfmk/mach/kern_return.h).
const KERN_FAILURE: c_int = 5;
