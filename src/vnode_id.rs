//! Keyed vnode ids: what records carry instead of a kernel address.
//!
//! SipHash-1-3 with a per-load random key is a PRF, so ids are stable within a
//! load (the same vnode always gets the same id) but say nothing about the
//! address behind them, and mean nothing across loads.

use core::hash::Hasher;
use siphasher::sip::SipHasher13;

/// Hashes vnode addresses with a secret key.
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

    /// The id of the vnode at `addr`; 0 stays 0 ("no vnode"), and no address
    /// maps to 0.
    #[inline]
    pub fn id(&self, addr: u64) -> u64 {
        if addr == 0 {
            return 0;
        }
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u64(addr);
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
        assert_eq!(a.id(addr), a.id(addr));
        assert_ne!(a.id(addr), b.id(addr));
        assert_ne!(a.id(addr), addr);
        assert_ne!(a.id(addr), a.id(addr + 8));
        assert_eq!(a.id(0), 0);
    }
}
