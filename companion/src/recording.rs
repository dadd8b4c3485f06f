//! The recording file format: a header, then the raw batches exactly as the
//! kext returned them, each prefixed by its length.
//!
//! ```text
//! header  magic "MAPTRACE" (8) | format u16 | abi u16 | header_len u32
//!         | start_unix_ns u64 | host_len u16 | host (host_len bytes)
//! frame*  len u32 | batch (len bytes)
//! ```
//! All integers are little-endian. A file ends after a whole frame; a partial
//! frame at the end is reported as truncation.
//!
//! Since format 2, a recording of a live source ends with one more frame: the
//! kext's `kern.maptrace.stats` as read after the last batch (it starts with
//! `MT_STATS_MAGIC`, never a batch's magic). Drops after a shard's last record
//! read reach no batch, only these counters, so a replay reports them as the
//! live stream did. Format 1 files (no such frame) are still read.

use maptrace_abi::{AbiVersion, raw};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

/// The first bytes of every recording.
pub const MAGIC: [u8; 8] = *b"MAPTRACE";
/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// Largest batch a frame may hold; a bigger length means a corrupt file.
pub const MAX_FRAME: u32 = 1 << 30;
/// Longest host name kept.
const MAX_HOST: usize = 255;
/// Bytes of the fixed part of the header.
const FIXED_HEADER: usize = 8 + 2 + 2 + 4 + 8 + 2;

/// What a recording says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `MT_ABI_VERSION` of the kext that produced the batches.
    pub abi_version: u16,
    /// Wall-clock start of the recording, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// The machine it was recorded on.
    pub host: String,
}

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be opened or read.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        err: io::Error,
    },
    /// The first bytes are not [`MAGIC`].
    #[error(
        "{path}: not a maptrace recording (it does not start with \"MAPTRACE\"); record one with `maptrace record -o FILE`"
    )]
    BadMagic {
        /// The file.
        path: String,
    },
    /// A format this build does not read.
    #[error(
        "{path}: recording format {found} is not supported (this maptrace reads formats {MIN_FORMAT_VERSION} to {FORMAT_VERSION}); use a newer maptrace"
    )]
    BadFormat {
        /// The file.
        path: String,
        /// The version found.
        found: u16,
    },
    /// Batches of another major ABI version.
    #[error(
        "{path}: recorded from a kext with {mismatch}; use the maptrace that matches that kext"
    )]
    AbiMismatch {
        /// The file.
        path: String,
        /// The version in the header.
        mismatch: maptrace_abi::AbiMismatch,
    },
    /// The file ends inside the header or a frame.
    #[error(
        "{path}: truncated {what} (need {need} more bytes, the file ends after {have}); the recording was cut off"
    )]
    Truncated {
        /// The file.
        path: String,
        /// "header" or "batch N".
        what: String,
        /// Bytes needed.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// A header field or frame length that cannot be right.
    #[error("{path}: corrupt recording: {what}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
}

/// Serialises a header.
pub fn encode_header(h: &Header) -> Vec<u8> {
    let host = h.host.as_bytes();
    let host = host.get(..host.len().min(MAX_HOST)).unwrap_or(host);
    let len = FIXED_HEADER + host.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    v.extend_from_slice(&h.abi_version.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&h.start_unix_ns.to_le_bytes());
    v.extend_from_slice(&(host.len() as u16).to_le_bytes());
    v.extend_from_slice(host);
    v
}

/// Writes a recording frame by frame.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    frames: u64,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a recording with `header`.
    pub fn new(mut out: W, header: &Header) -> io::Result<Writer<W>> {
        let h = encode_header(header);
        out.write_all(&h)?;
        Ok(Writer {
            out,
            frames: 0,
            bytes: h.len() as u64,
        })
    }

    /// Appends one batch.
    pub fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.write_frame(batch, "batch")?;
        self.frames += 1;
        Ok(())
    }

    /// Appends the kext's `kern.maptrace.stats` as read after the last
    /// batch (the recording's closing frame).
    pub fn write_stats(&mut self, stats: &[u8]) -> io::Result<()> {
        if !is_stats_frame(stats) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not kern.maptrace.stats bytes (no stats magic)",
            ));
        }
        self.write_frame(stats, "statistics")
    }

    fn write_frame(&mut self, bytes: &[u8], what: &str) -> io::Result<()> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l <= MAX_FRAME)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} larger than a frame may hold"),
                )
            })?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(bytes)?;
        self.bytes += 4 + u64::from(len);
        Ok(())
    }

    /// Pushes what was written to the file, so a drained batch survives
    /// even a kill.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Batches written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes written, header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads as many bytes as are there, up to `buf.len()`.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Bytes a frame's buffer grows by at a time.
pub const READ_STEP: usize = 64 << 10;

/// Reads up to `len` bytes into `buf[..len]`, growing `buf` only as the
/// bytes arrive: a corrupt length in a short file costs no huge allocation.
fn read_growing(r: &mut impl Read, buf: &mut Vec<u8>, len: usize) -> io::Result<usize> {
    let mut got = 0;
    while got < len {
        let end = got + (len - got).min(READ_STEP);
        if buf.len() < end {
            buf.resize(end, 0);
        }
        let n = read_full(r, &mut buf[got..end])?;
        got += n;
        if got < end {
            break;
        }
    }
    Ok(got)
}

/// Reads a recording: validates the header, then yields its batches.
#[derive(Debug)]
pub struct Reader<R: Read> {
    input: R,
    path: String,
    header: Header,
    frames: u64,
    offset: u64,
    /// The closing statistics frame, once read.
    final_stats: Option<Vec<u8>>,
    /// The end of the file was reached.
    ended: bool,
}

impl Reader<BufReader<File>> {
    /// Opens the recording at `path`.
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let name = path.display().to_string();
        let f = File::open(path).map_err(|err| RecordingError::Io {
            path: name.clone(),
            err,
        })?;
        Reader::new(BufReader::with_capacity(1 << 20, f), &name)
    }
}

impl<R: Read> Reader<R> {
    /// The name the recording goes by in messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads and validates the header from `input` (named `path` in errors).
    pub fn new(mut input: R, path: &str) -> Result<Reader<R>, RecordingError> {
        let io_err = |err| RecordingError::Io {
            path: path.into(),
            err,
        };
        let mut fixed = [0u8; FIXED_HEADER];
        let got = read_full(&mut input, &mut fixed).map_err(io_err)?;
        if got < MAGIC.len() || fixed[..8] != MAGIC {
            // A short file that is a prefix of the magic is still not ours.
            return Err(RecordingError::BadMagic { path: path.into() });
        }
        if got < FIXED_HEADER {
            return Err(RecordingError::Truncated {
                path: path.into(),
                what: "header".into(),
                need: (FIXED_HEADER - got) as u64,
                have: got as u64,
            });
        }
        let u16_at = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]);
        let format = u16_at(8);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&format) {
            return Err(RecordingError::BadFormat {
                path: path.into(),
                found: format,
            });
        }
        let abi_version = u16_at(10);
        if let Err(mismatch) = AbiVersion::from_field(abi_version).check() {
            return Err(RecordingError::AbiMismatch {
                path: path.into(),
                mismatch,
            });
        }
        let header_len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as usize;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&fixed[16..24]);
        let host_len = usize::from(u16_at(24));
        if host_len > MAX_HOST || header_len != FIXED_HEADER + host_len {
            return Err(RecordingError::Corrupt {
                path: path.into(),
                what: format!(
                    "header length {header_len} does not match host name length {host_len}"
                ),
            });
        }
        let mut host = vec![0u8; host_len];
        let got = read_full(&mut input, &mut host).map_err(io_err)?;
        if got < host_len {
            return Err(RecordingError::Truncated {
                path: path.into(),
                what: "header".into(),
                need: (host_len - got) as u64,
                have: (FIXED_HEADER + got) as u64,
            });
        }
        let header = Header {
            abi_version,
            start_unix_ns: u64::from_le_bytes(ts),
            host: String::from_utf8_lossy(&host).into_owned(),
        };
        Ok(Reader {
            input,
            path: path.into(),
            header,
            frames: 0,
            offset: header_len as u64,
            final_stats: None,
            ended: false,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next batch into `buf`; `Ok(None)` at a clean end of file.
    /// The closing statistics frame is kept for [`Reader::final_stats`].
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, RecordingError> {
        loop {
            let Some(n) = self.read_frame(buf)? else {
                self.ended = true;
                return Ok(None);
            };
            let frame = buf.get(..n).unwrap_or(&[]);
            if !is_stats_frame(frame) {
                return Ok(Some(n));
            }
            self.final_stats = Some(frame.to_vec());
        }
    }

    /// The kext's statistics that close the recording (format 2), once the
    /// whole file was read: a partial replay has not seen the drops they count.
    pub fn final_stats(&self) -> Option<&[u8]> {
        self.final_stats.as_deref().filter(|_| self.ended)
    }

    fn read_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, RecordingError> {
        let io_err = |err| RecordingError::Io {
            path: self.path.clone(),
            err,
        };
        let mut len = [0u8; 4];
        let got = read_full(&mut self.input, &mut len).map_err(io_err)?;
        let index = self.frames + 1;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(self.truncated(index, (4 - got) as u64, got as u64));
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(RecordingError::Corrupt {
                path: self.path.clone(),
                what: format!("batch {index} at byte {} claims {len} bytes", self.offset),
            });
        }
        let len = len as usize;
        let got = read_growing(&mut self.input, buf, len).map_err(|err| RecordingError::Io {
            path: self.path.clone(),
            err,
        })?;
        if got < len {
            return Err(self.truncated(index, (len - got) as u64, 4 + got as u64));
        }
        self.frames = index;
        self.offset += 4 + len as u64;
        Ok(Some(len))
    }

    fn truncated(&self, index: u64, need: u64, have_in_frame: u64) -> RecordingError {
        RecordingError::Truncated {
            path: self.path.clone(),
            what: format!("batch {index}"),
            need,
            have: self.offset + have_in_frame,
        }
    }
}

/// Whether a frame holds the kext's statistics rather than a batch.
pub fn is_stats_frame(frame: &[u8]) -> bool {
    frame
        .first_chunk::<4>()
        .is_some_and(|m| u32::from_le_bytes(*m) == raw::MT_STATS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            abi_version: raw::MT_ABI_VERSION as u16,
            start_unix_ns: 1_700_000_000_000_000_000,
            host: "mac-mini".into(),
        }
    }

    fn recording(batches: &[&[u8]]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        for b in batches {
            w.write_batch(b).unwrap();
        }
        assert_eq!(w.frames(), batches.len() as u64);
        w.finish().unwrap()
    }

    #[test]
    fn frames_round_trip_with_the_header() {
        let bytes = recording(&[b"first", b"", b"third batch"]);
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(r.header(), &header());
        let mut buf = Vec::new();
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"first");
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(0));
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(11));
        assert_eq!(&buf[..11], b"third batch");
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);
    }

    #[test]
    fn every_cut_of_a_recording_is_truncation_or_a_clean_prefix() {
        let bytes = recording(&[b"0123456789", b"abcdef"]);
        let header_len = encode_header(&header()).len();
        let frame_ends = [header_len, header_len + 14, header_len + 24];
        for cut in 8..bytes.len() {
            let res = Reader::new(&bytes[..cut], "t").and_then(|mut r| {
                let mut buf = Vec::new();
                while r.next_frame(&mut buf)?.is_some() {}
                Ok(())
            });
            if frame_ends.contains(&cut) {
                assert!(res.is_ok(), "cut {cut}: {res:?}");
            } else {
                let e = res.unwrap_err();
                assert!(
                    matches!(e, RecordingError::Truncated { .. }),
                    "cut {cut}: {e:?}"
                );
                assert!(e.to_string().contains("truncated"), "{e}");
            }
        }
    }

    #[test]
    fn foreign_files_and_other_versions_are_refused() {
        let e = Reader::new(&b"GIF89a...................."[..], "x.gif").unwrap_err();
        assert!(matches!(e, RecordingError::BadMagic { .. }) && e.to_string().contains("x.gif"));
        let e = Reader::new(&b""[..], "empty").unwrap_err();
        assert!(matches!(e, RecordingError::BadMagic { .. }));

        let mut bytes = recording(&[]);
        bytes[8] = 9;
        let e = Reader::new(bytes.as_slice(), "t").unwrap_err();
        assert!(
            matches!(e, RecordingError::BadFormat { found: 9, .. }),
            "{e:?}"
        );

        let mut bytes = recording(&[]);
        bytes[11] = 7; // major ABI 7
        let e = Reader::new(bytes.as_slice(), "t").unwrap_err();
        assert!(e.to_string().contains("ABI 7."), "{e}");

        let mut bytes = recording(&[]);
        bytes[12] = 3; // header_len no longer matches the host name
        let e = Reader::new(bytes.as_slice(), "t").unwrap_err();
        assert!(matches!(e, RecordingError::Corrupt { .. }), "{e:?}");
    }

    #[test]
    fn format_1_is_read_and_only_stats_bytes_close_a_recording() {
        let mut bytes = recording(&[b"batch"]);
        bytes[8] = 1;
        let mut r = Reader::new(bytes.as_slice(), "old").unwrap();
        let mut buf = Vec::new();
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(5));
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);

        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let e = w.write_stats(b"not stats").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut stats = raw::MT_STATS_MAGIC.to_le_bytes().to_vec();
        stats.extend_from_slice(&[0; 76]);
        let before = w.bytes();
        w.write_stats(&stats).unwrap();
        assert_eq!(w.frames(), 0, "the closing frame is no batch");
        assert_eq!(w.bytes() - before, 4 + 80);
        assert!(is_stats_frame(&stats) && !is_stats_frame(b"MSB") && !is_stats_frame(b""));

        w.write_batch(b"after").unwrap();
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(5), "stats skipped");
        assert_eq!(r.final_stats(), None, "not before the end");
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);
        assert_eq!(r.final_stats(), Some(stats.as_slice()));
    }

    #[test]
    fn absurd_frame_lengths_are_corruption() {
        let mut bytes = recording(&[]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        let e = r.next_frame(&mut Vec::new()).unwrap_err();
        assert!(matches!(e, RecordingError::Corrupt { .. }), "{e:?}");
    }

    #[test]
    fn a_huge_declared_frame_in_a_short_file_allocates_what_is_there() {
        // Found by fuzzing: the reader sized the buffer from the length
        // before reading, so 1 KiB of file cost 1 GiB of memory.
        let mut bytes = recording(&[]);
        bytes.extend_from_slice(&MAX_FRAME.to_le_bytes());
        bytes.extend_from_slice(&[7; 1000]);
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        let mut buf = Vec::new();
        let e = r.next_frame(&mut buf).unwrap_err();
        assert!(
            matches!(e, RecordingError::Truncated { need, .. } if need == u64::from(MAX_FRAME) - 1000),
            "{e:?}"
        );
        assert!(buf.capacity() <= 2 * READ_STEP, "{} bytes", buf.capacity());

        // A frame longer than one step still arrives whole.
        let big: Vec<u8> = (0..3 * READ_STEP + 5).map(|i| i as u8).collect();
        let bytes = recording(&[&big]);
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(big.len()));
        assert_eq!(&buf[..big.len()], big.as_slice());
    }

    #[test]
    fn long_host_names_are_cut_not_corrupting() {
        let h = Header {
            host: "h".repeat(1000),
            ..header()
        };
        let mut bytes = encode_header(&h);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(r.header().host.len(), MAX_HOST);
        assert_eq!(r.next_frame(&mut Vec::new()).unwrap(), Some(0));
    }
}
