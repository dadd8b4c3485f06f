//! A loom model of the vector table (`src/vectors.rs`): the shim removes a
//! vector at its type's last unmount and inserts it again at the next
//! mount, reviving the removed slot, while a hook looks its original up
//! without a lock. Loom explores every interleaving and the weak-memory
//! outcomes the orderings allow, and checks that a lookup of the key
//! answers nothing or an original some entry of that key was published
//! with, never a slot's unwritten zero or another key's original.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_vectors`
#![cfg(loom)]

use loom::sync::Arc;
use maptrace_core::vectors::VectorTable;

const KEY: u64 = 0x1000;
const OTHER: u64 = 0x2000;
/// The key's originals as first hooked, and after its filesystem's kext
/// came back with other code at the same address.
const FIRST: [u64; 4] = [11, 12, 13, 14];
const LATER: [u64; 4] = [21, 22, 23, 24];
const OTHERS: [u64; 4] = [31, 32, 33, 34];

/// The shim's side (main thread) against a hook's lookups (`reader`);
/// `accept` judges each lookup's answer for op 0 and op 3.
fn model(accept: fn(usize, Option<u64>) -> bool) {
    loom::model(move || {
        let t = Arc::new(VectorTable::new());
        assert_eq!(t.insert(KEY, FIRST), Ok(0));
        let reader = {
            let t = Arc::clone(&t);
            loom::thread::spawn(move || {
                for op in [0u32, 3] {
                    let got = t.original(KEY, op);
                    assert!(accept(op as usize, got), "op {op}: {got:?}");
                }
            })
        };
        assert!(t.remove(KEY));
        assert_eq!(t.insert(OTHER, OTHERS), Ok(1));
        assert_eq!(t.insert(KEY, LATER), Ok(2), "other originals: a new slot");
        assert!(t.remove(KEY));
        assert_eq!(t.insert(KEY, FIRST), Ok(0), "revived");
        reader.join().unwrap();
        assert_eq!(t.original(KEY, 1), Some(FIRST[1]));
        assert_eq!(t.original(OTHER, 1), Some(OTHERS[1]));
        assert_eq!(t.len(), 3);
    });
}

#[test]
fn a_lookup_racing_removes_and_revivals_sees_only_published_originals() {
    model(|i, got| got.is_none() || got == Some(FIRST[i]) || got == Some(LATER[i]));
}

/// The model reaches every state: a lookup between the two inserts of the
/// key gets the later originals (so the check above is not vacuous).
#[test]
#[should_panic(expected = "op")]
fn a_lookup_can_see_the_later_originals() {
    model(|i, got| got != Some(LATER[i]));
}
