//! Vnode-op descriptors: the exported `vnop_*_desc` and the offsets
//! `vfs_op_init` gives them per release.

use std::ffi::c_int;

use crate::context::Vop;
use crate::kernel::Release;
use crate::xnu;

unsafe extern "C" {
    static mut vnop_default_desc: xnu::vnodeop_desc;
    static mut vnop_lookup_desc: xnu::vnodeop_desc;
    static mut vnop_mmap_desc: xnu::vnodeop_desc;
    static mut vnop_mnomap_desc: xnu::vnodeop_desc;
    static mut vnop_close_desc: xnu::vnodeop_desc;
    static mut vnop_pagein_desc: xnu::vnodeop_desc;
    static mut vnop_mmap_check_desc: xnu::vnodeop_desc;
    static mut vnop_reclaim_desc: xnu::vnodeop_desc;
    static mut vnop_inactive_desc: xnu::vnodeop_desc;
    pub(super) fn vn_default_error() -> c_int;
}

/// The descriptor list `vfs_op_init` numbers, in XNU's `vfs_op_descs` order.
/// 15.x has entries 10.15 lacks, so every offset after them moves.
fn desc_names(release: Release) -> Vec<&'static str> {
    let mut v = vec![
        "vnop_default",
        "vnop_strategy",
        "vnop_bwrite",
        "vnop_lookup",
        "vnop_create",
        "vnop_mknod",
        "vnop_whiteout",
        "vnop_open",
        "vnop_compound_open",
        "vnop_close",
        "vnop_access",
        "vnop_getattr",
        "vnop_setattr",
        "vnop_read",
        "vnop_write",
        "vnop_ioctl",
        "vnop_select",
        "vnop_exchange",
        "vnop_kqfilt_add",
        "vnop_kqfilt_remove",
        "vnop_setlabel",
        "vnop_revoke",
        "vnop_mmap",
        "vnop_mnomap",
        "vnop_fsync",
        "vnop_remove",
        "vnop_compound_remove",
        "vnop_link",
        "vnop_rename",
        "vnop_compound_rename",
        "vnop_renamex",
        "vnop_mkdir",
        "vnop_compound_mkdir",
        "vnop_rmdir",
        "vnop_compound_rmdir",
        "vnop_symlink",
        "vnop_readdir",
        "vnop_readdirattr",
        "vnop_getattrlistbulk",
        "vnop_readlink",
        "vnop_inactive",
        "vnop_reclaim",
        "vnop_print",
        "vnop_pathconf",
        "vnop_advlock",
        "vnop_truncate",
        "vnop_allocate",
        "vnop_pagein",
        "vnop_pageout",
        "vnop_searchfs",
        "vnop_copyfile",
        "vnop_clonefile",
        "vnop_blktooff",
        "vnop_offtoblk",
        "vnop_blockmap",
        "vnop_monitor",
        "vnop_getxattr",
        "vnop_setxattr",
        "vnop_removexattr",
        "vnop_listxattr",
        "vnop_getnamedstream",
        "vnop_makenamedstream",
        "vnop_removenamedstream",
        "vnop_mmap_check",
    ];
    if release == Release::Sequoia {
        // Operations added after 10.15, ahead of the ones maptrace uses.
        v.insert(8, "vnop_compound_open_ext");
        v.insert(17, "vnop_verify");
        v.insert(21, "vnop_getattrlistbulk_ext");
    }
    v
}

/// Offsets `vfs_op_init` assigned at this boot.
#[derive(Clone, Copy, Debug)]
pub struct VopOffsets {
    /// Entries per vector (`vfs_opv_numops`).
    pub numops: usize,
    /// vnop_default.
    pub default: usize,
    /// vnop_lookup.
    pub lookup: usize,
    /// vnop_mmap.
    pub mmap: usize,
    /// vnop_mnomap.
    pub mnomap: usize,
    /// vnop_pagein.
    pub pagein: usize,
    /// vnop_mmap_check.
    pub mmap_check: usize,
    /// vnop_reclaim.
    pub reclaim: usize,
    /// vnop_inactive.
    pub inactive: usize,
    /// vnop_close.
    pub close: usize,
}

impl VopOffsets {
    pub(super) fn of(&self, op: Vop) -> usize {
        match op {
            Vop::Mmap => self.mmap,
            Vop::Mnomap => self.mnomap,
            Vop::Pagein => self.pagein,
            Vop::MmapCheck => self.mmap_check,
            Vop::Reclaim => self.reclaim,
            Vop::Close => self.close,
        }
    }
}

/// Writes `off` into an exported descriptor.
fn set_desc(desc: *mut xnu::vnodeop_desc, off: usize) {
    // SAFETY: `desc` is one of the C descriptor statics; only boot writes it,
    // while the boot lock excludes every other simulator.
    unsafe { (*desc).vdesc_offset = off as c_int };
}

/// Address of an exported descriptor.
pub fn desc_addr(op: Vop) -> usize {
    match op {
        Vop::Mmap => (&raw const vnop_mmap_desc) as usize,
        Vop::Mnomap => (&raw const vnop_mnomap_desc) as usize,
        Vop::Pagein => (&raw const vnop_pagein_desc) as usize,
        Vop::MmapCheck => (&raw const vnop_mmap_check_desc) as usize,
        Vop::Reclaim => (&raw const vnop_reclaim_desc) as usize,
        Vop::Close => (&raw const vnop_close_desc) as usize,
    }
}

/// Address of `vnop_default_desc`.
pub fn default_desc_addr() -> usize {
    (&raw const vnop_default_desc) as usize
}

/// `vfs_op_init`: numbers this release's descriptors in list order and
/// writes each exported descriptor's `vdesc_offset`.
pub(super) fn vfs_op_init(release: Release) -> VopOffsets {
    let names = desc_names(release);
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap_or(0);
    let offsets = VopOffsets {
        numops: names.len(),
        default: at("vnop_default"),
        lookup: at("vnop_lookup"),
        mmap: at("vnop_mmap"),
        mnomap: at("vnop_mnomap"),
        pagein: at("vnop_pagein"),
        mmap_check: at("vnop_mmap_check"),
        reclaim: at("vnop_reclaim"),
        inactive: at("vnop_inactive"),
        close: at("vnop_close"),
    };
    set_desc(&raw mut vnop_default_desc, offsets.default);
    set_desc(&raw mut vnop_lookup_desc, offsets.lookup);
    set_desc(&raw mut vnop_mmap_desc, offsets.mmap);
    set_desc(&raw mut vnop_mnomap_desc, offsets.mnomap);
    set_desc(&raw mut vnop_pagein_desc, offsets.pagein);
    set_desc(&raw mut vnop_mmap_check_desc, offsets.mmap_check);
    set_desc(&raw mut vnop_reclaim_desc, offsets.reclaim);
    set_desc(&raw mut vnop_inactive_desc, offsets.inactive);
    set_desc(&raw mut vnop_close_desc, offsets.close);
    offsets
}
