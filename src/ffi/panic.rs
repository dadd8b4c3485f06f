//! The kernel build's panic handler. The core denies every panicking
//! construct (see `lib.rs`), so this is unreachable by construction; if it is
//! ever reached, the kernel is told where, through the shim.

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    // SAFETY: mt_kpi_panic reads `file_len` bytes at `file` and never returns.
    unsafe { super::bridge::mt_kpi_panic(file.as_ptr().cast(), file.len() as u32, line) }
}
