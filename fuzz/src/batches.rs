//! The decode target: one input is a stream of batches, each prefixed by its
//! length as in a recording frame (`len u32 LE | bytes`); a length past the
//! end takes what is left. Every batch goes through one `Decoder`, then the
//! records of each batch through `merge_by_time`.

use maptrace_abi::decode::{Decoder, Losses, Record};
use maptrace_abi::merge::merge_by_time;

/// The batches of one input.
pub fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<4>() {
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        let (batch, tail) = rest.split_at(len);
        out.push(batch);
        data = tail;
    }
    out
}

/// The inverse of [`split`]: frames as the decode corpus stores them.
pub fn join<'a>(batches: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for b in batches {
        let len = u32::try_from(b.len()).expect("a batch under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Decodes `data` and checks what the decoder promises; panics on a breach.
pub fn check_stream(data: &[u8]) {
    let mut dec = Decoder::new();
    let mut prev = dec.losses();
    for (i, bytes) in split(data).into_iter().enumerate() {
        let batches_before = dec.batches();
        match dec.decode(bytes) {
            Err(e) => {
                assert!(!e.to_string().is_empty(), "batch {i}: an error says what");
                assert_eq!(dec.batches(), batches_before, "a refused batch counts");
                assert_eq!(dec.losses(), prev, "a refused batch changed the accounting");
            }
            Ok((batch, results)) => {
                assert_eq!(dec.batches(), batches_before + 1);
                assert_eq!(dec.generation(), Some(batch.header.generation));
                let mut runs: Vec<Vec<Record>> = Vec::new();
                for r in results {
                    match r {
                        Ok(rec) => {
                            assert!(
                                rec.shard < maptrace_abi::raw::MT_MAX_SHARDS as u16,
                                "a record of shard {} was accepted",
                                rec.shard
                            );
                            match runs.last_mut() {
                                Some(run) if run.last().is_some_and(|l| l.shard == rec.shard) => {
                                    run.push(rec)
                                }
                                _ => runs.push(vec![rec]),
                            }
                        }
                        Err(e) => assert!(!e.to_string().is_empty()),
                    }
                }
                check_merge(runs);
            }
        }
        let now = dec.losses();
        check_losses(&prev, &now);
        prev = now;
    }
}

/// Loss figures only grow, and the unattributed part is part of the drops.
fn check_losses(before: &Losses, after: &Losses) {
    assert!(
        after.unattributed <= after.dropped,
        "{after:?}: more unattributed than dropped"
    );
    assert!(
        after.gap_slots >= before.gap_slots && after.corrupt_segments >= before.corrupt_segments,
        "loss counters went backwards: {before:?} -> {after:?}"
    );
}

/// The merge keeps every record, keeps each run's order, and orders runs
/// that were each in time order.
fn check_merge(runs: Vec<Vec<Record>>) {
    let key = |r: &Record| (r.timestamp_ns, r.shard, r.pos);
    let sorted_runs = runs
        .iter()
        .all(|r| r.windows(2).all(|w| key(&w[0]) <= key(&w[1])));
    let mut expect: Vec<(u64, u16, u64)> = runs.iter().flatten().map(key).collect();
    let shard_order: Vec<Vec<(u64, u16, u64)>> =
        runs.iter().map(|r| r.iter().map(key).collect()).collect();
    let merged = merge_by_time(runs);
    let got: Vec<(u64, u16, u64)> = merged.iter().map(key).collect();
    assert_eq!(got.len(), expect.len(), "the merge lost or made records");
    if sorted_runs {
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "merge out of order");
    }
    for run in &shard_order {
        let mut it = got.iter();
        assert!(
            run.iter().all(|k| it.any(|g| g == k)),
            "a run's own order was not kept"
        );
    }
    let mut sorted_got = got;
    sorted_got.sort_unstable();
    expect.sort_unstable();
    assert_eq!(sorted_got, expect, "the merge changed the records");
}
