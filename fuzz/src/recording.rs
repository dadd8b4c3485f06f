//! The recording target: a recording file read as `maptrace --source file:`
//! reads it (header, frames, decode pipeline). Errors are clean, and memory
//! stays bounded by the input whatever lengths the file declares.

use std::io::Cursor;

use maptrace::pipeline::{KextDrops, Pipeline};
use maptrace::recording::{FRAME_HEAD, Frame, Reader};

/// Reads `data` as a recording; panics on a breach.
pub fn check(data: &[u8]) {
    let mut reader = match Reader::new(Cursor::new(data), "fuzz.mtr") {
        Ok(r) => r,
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.mtr: "), "{e}");
            return;
        }
    };
    // Only format 5 on keeps a page size (a valid one, or the header is refused).
    assert!(
        reader.format() >= maptrace::recording::PAGE_SIZE_FORMAT
            || reader.header().page_size.is_none()
    );
    let mut pipeline = Pipeline::new();
    let (mut buf, mut items) = (Vec::new(), Vec::new());
    let mut total = 0usize;
    loop {
        let next = reader.next_frame(&mut buf);
        // The buffer grows with what the file holds, not what it claims.
        assert!(
            buf.capacity() <= 2 * (data.len() + maptrace::recording::READ_STEP),
            "a {}-byte file made a {}-byte buffer",
            data.len(),
            buf.capacity()
        );
        match next {
            Ok(None) => break,
            Ok(Some(Frame::Batch(n))) => {
                // Format 3 frames have a 12-byte head, older ones 4.
                total += if reader.checksummed() { FRAME_HEAD } else { 4 } + n;
                assert!(total <= data.len(), "frames longer than the file");
                items.clear();
                pipeline.feed(&buf[..n], &mut items);
            }
            Ok(Some(Frame::Corrupt(msg))) => {
                assert!(msg.starts_with("fuzz.mtr: "), "{msg}");
            }
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz.mtr: "), "{e}");
                break;
            }
        }
    }
    // A cut is where reading stopped: inside the file, after what was read.
    if let Some(cut) = reader.cut() {
        assert_eq!(cut.offset, reader.offset());
        assert_eq!(cut.offset + cut.bytes, data.len() as u64, "{cut:?}");
    }
    // Format 2 on closes with the kext's stats: their drop counters place the
    // tail losses, as `maptrace` does with a recording.
    let drops = reader
        .final_stats()
        .and_then(|st| maptrace::control::parse_stats(st).ok())
        .map(|st| KextDrops {
            generation: st.generation,
            per_shard: st.shards.iter().map(|s| s.dropped).collect(),
        });
    pipeline.finish_with(drops.as_ref(), &mut items);
}
