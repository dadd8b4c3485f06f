//! Keyed vnode ids: what records carry instead of a kernel address.
//!
//! SipHash-1-3 with a per-load random key is a PRF, so ids are stable within a
//! load (the same vnode always gets the same id) but say nothing about the
//! address behind them, and mean nothing across loads.
//!
//! The key is (address, vid): XNU reuses a reclaimed vnode's memory for the
//! next file and bumps `v_id` (vnode_vid; vclean/vnode_reclaim_internal,
//! bsd/vfs/vfs_subr.c, xnu-11417.121.6), so the address alone would carry the
//! old file's identity over to the new one.

use core::hash::Hasher;
use siphasher::sip::SipHasher13;

/// Hashes vnode (address, vid) pairs with a secret key.
#[derive(Clone, Copy, Debug)]
pub struct VnodeIdKey {
    k0: u64,
    k1: u64,
}

impl VnodeIdKey {
    /// A key from 128 random bits.
    pub const fn new(key: [u64; 2]) -> VnodeIdKey {
        VnodeIdKey {
            k0: key[0],
            k1: key[1],
        }
    }

    /// The id of the vnode at `addr` in its incarnation `vid`; address 0
    /// stays 0 ("no vnode"), and no vnode maps to 0.
    #[inline]
    pub fn id(&self, addr: u64, vid: u32) -> u64 {
        if addr == 0 {
            return 0;
        }
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u64(addr);
        h.write_u32(vid);
        h.finish().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_keyed_and_never_the_address() {
        let a = VnodeIdKey::new([1, 2]);
        let b = VnodeIdKey::new([3, 4]);
        let addr = 0xffff_ff80_1234_5678;
        assert_eq!(a.id(addr, 3), a.id(addr, 3));
        assert_ne!(a.id(addr, 3), b.id(addr, 3));
        assert_ne!(a.id(addr, 3), addr);
        assert_ne!(a.id(addr, 3), a.id(addr + 8, 3));
        assert_eq!(a.id(0, 3), 0);
    }

    #[test]
    fn a_recycled_vnode_is_a_new_identity() {
        let a = VnodeIdKey::new([1, 2]);
        let addr = 0xffff_ff80_1234_5678;
        assert_ne!(a.id(addr, 3), a.id(addr, 4));
    }
}
