//! The recording file format: a header, then the raw batches exactly as the
//! kext returned them, each in a checked frame.
//!
//! ```text
//! header  magic "MAPTRACE" (8) | format u16 | abi u16 | header_len u32
//!         | start_unix_ns u64 | start_clock_ns u64 | page_size u32   format 5
//!         | host_len u16 | host (host_len bytes)
//! header  magic "MAPTRACE" (8) | format u16 | abi u16 | header_len u32
//!         | start_unix_ns u64 | start_clock_ns u64              format 4
//!         | host_len u16 | host (host_len bytes)
//! header  magic "MAPTRACE" (8) | format u16 | abi u16 | header_len u32
//!         | start_unix_ns u64 | host_len u16 | host              formats 1..=3
//! frame*  len u32 | len_crc u32 | crc u32 | batch (len bytes)     formats 3..=5
//! frame*  len u32 | batch (len bytes)                             formats 1, 2
//! ```
//! All integers are little-endian. `len_crc` is the CRC-32 (IEEE, as zlib)
//! of the 4 `len` bytes and `crc` that of the batch bytes: a flipped bit in
//! a frame's length is caught before the length is trusted (the rest of the
//! file cannot be located then), one in its bytes skips that frame only.
//!
//! A file ends after a whole frame. A recording whose writer died (a panic,
//! a kill, a full disk) ends inside one: it is read up to the last whole
//! frame and the cut (where, how many bytes of the frame are there) is
//! reported, not refused.
//!
//! Since format 2, a recording of a live source ends with one more frame: the
//! kext's `kern.maptrace.stats` as read after the last batch (it starts with
//! `MT_STATS_MAGIC`, never a batch's magic). Drops after a shard's last record
//! read reach no batch, only these counters, so a replay reports them as the
//! live stream did. Formats 1 (no such frame) and 2 (no checksums) are still
//! read.
//!
//! Since format 4, the header pairs `start_unix_ns` with `start_clock_ns`,
//! the kext's clock (the time base of every record, nanoseconds since boot)
//! read at the same moment: an [`Anchor`] that maps each record's time to
//! UTC (`--time wall`). `u64::MAX` there means no reading was taken (a
//! recording copied from a format 3 one). Formats 1..=3 have no anchor.
//!
//! Since format 5, the header has the VM page size of the machine recorded
//! on (in bytes; 0: not known), which counts the distinct pages page-ins
//! touched (16 KiB on Apple silicon, 4 KiB on Intel). Formats 1..=4 have
//! none: a report counts their pages in 4 KiB and says so.

use crate::pagesize::PageSize;
use crate::wallclock::Anchor;
use maptrace_abi::{AbiVersion, raw};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

/// The first bytes of every recording.
pub const MAGIC: [u8; 8] = *b"MAPTRACE";
/// The format version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u16 = 5;
/// The first format whose frames carry checksums.
pub const CHECKSUM_FORMAT: u16 = 3;
/// The first format whose header carries the kext's clock (an [`Anchor`]).
pub const ANCHOR_FORMAT: u16 = 4;
/// The first format whose header carries the page size.
pub const PAGE_SIZE_FORMAT: u16 = 5;
/// `page_size` of a format 5 header that does not know it.
const NO_PAGE_SIZE: u32 = 0;
/// `start_clock_ns` of a format 4 header without a clock reading.
const NO_CLOCK: u64 = u64::MAX;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// Largest batch a frame may hold; a bigger length means a corrupt file.
pub const MAX_FRAME: u32 = 1 << 30;
/// Longest host name kept.
const MAX_HOST: usize = 255;
/// Bytes of the header before its format-dependent part: magic, format,
/// abi, header_len.
const PREAMBLE: usize = 8 + 2 + 2 + 4;

/// Bytes of the longest fixed part of a header.
const MAX_FIXED_HEADER: usize = PREAMBLE + 8 + 8 + 4 + 2;

/// Bytes of the fixed part of a header of `format`: the preamble, the
/// start time(s), the page size and `host_len`.
const fn fixed_header(format: u16) -> usize {
    if format >= PAGE_SIZE_FORMAT {
        MAX_FIXED_HEADER
    } else if format >= ANCHOR_FORMAT {
        PREAMBLE + 8 + 8 + 2
    } else {
        PREAMBLE + 8 + 2
    }
}

/// What a recording says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `MT_ABI_VERSION` of the kext that produced the batches.
    pub abi_version: u16,
    /// Wall-clock start of the recording, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// The kext's clock (nanoseconds since boot) read together with
    /// `start_unix_ns`; `None` in formats 1..=3.
    pub start_clock_ns: Option<u64>,
    /// The VM page size of the machine recorded on; `None` in formats
    /// 1..=4, or when the source did not say.
    pub page_size: Option<PageSize>,
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
    /// The file ends inside the header (a cut inside a frame is no error:
    /// see [`Cut`]).
    #[error(
        "{path}: truncated {what} (need {need} more bytes, the file ends after {have}); the recording was cut off"
    )]
    Truncated {
        /// The file.
        path: String,
        /// "header".
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

impl Header {
    /// The pair of readings that maps the records' clock to UTC, when the
    /// recording has one (format 4 on).
    pub fn anchor(&self) -> Option<Anchor> {
        self.start_clock_ns.map(|clock_ns| Anchor {
            unix_ns: self.start_unix_ns,
            clock_ns,
        })
    }
}

/// Serialises a header of the current format.
pub fn encode_header(h: &Header) -> Vec<u8> {
    encode_header_of(FORMAT_VERSION, h)
}

/// Serialises a header of `format` (older formats exist for tests and
/// fuzz seeds: this build writes only [`FORMAT_VERSION`] frames).
pub fn encode_header_of(format: u16, h: &Header) -> Vec<u8> {
    let host = h.host.as_bytes();
    let host = host.get(..host.len().min(MAX_HOST)).unwrap_or(host);
    let len = fixed_header(format) + host.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(&format.to_le_bytes());
    v.extend_from_slice(&h.abi_version.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&h.start_unix_ns.to_le_bytes());
    if format >= ANCHOR_FORMAT {
        // A reading of exactly u64::MAX (585 years after boot) is kept as
        // none: it cannot be told from the marker.
        v.extend_from_slice(&h.start_clock_ns.unwrap_or(NO_CLOCK).to_le_bytes());
    }
    if format >= PAGE_SIZE_FORMAT {
        let page_size = h.page_size.map_or(NO_PAGE_SIZE, PageSize::bytes_u32);
        v.extend_from_slice(&page_size.to_le_bytes());
    }
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
        self.out.write_all(&frame_head(len, bytes))?;
        self.out.write_all(bytes)?;
        self.bytes += FRAME_HEAD as u64 + u64::from(len);
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

/// Bytes before a format 3 frame's batch: `len`, `len_crc`, `crc`.
pub const FRAME_HEAD: usize = 12;

/// A format 3 frame's head for `bytes`.
pub fn frame_head(len: u32, bytes: &[u8]) -> [u8; FRAME_HEAD] {
    let mut h = [0u8; FRAME_HEAD];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&crc32fast::hash(&len.to_le_bytes()).to_le_bytes());
    h[8..].copy_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    h
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

/// Where a recording ends inside a frame: what was cut off.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cut {
    /// The incomplete frame (1 = the first frame after the header).
    pub frame: u64,
    /// Byte offset of the incomplete frame in the file.
    pub offset: u64,
    /// Bytes of the incomplete frame present (its head included): what a
    /// replay leaves unread.
    pub bytes: u64,
    /// Bytes the frame still needed, when its length was read and trusted.
    pub missing: Option<u64>,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the recording was cut off inside frame {} (at byte {}): its {} bytes there were not read",
            self.frame, self.offset, self.bytes
        )?;
        if let Some(m) = self.missing {
            write!(f, " ({m} more were needed)")?;
        }
        write!(f, "; everything before it was read")
    }
}

/// What [`Reader::next_frame`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A batch of this many bytes is at the start of the buffer.
    Batch(usize),
    /// A frame failed its checksum and was skipped; the message says which
    /// and where. When the frame's length itself was bad, nothing after it
    /// can be located and the next read ends the file.
    Corrupt(String),
}

/// Reads a recording: validates the header, then yields its batches up to
/// the last whole frame.
#[derive(Debug)]
pub struct Reader<R: Read> {
    input: R,
    path: String,
    format: u16,
    header: Header,
    /// Whole frames read (batches, corrupt ones and the closing stats).
    frames: u64,
    /// Batches returned.
    batches: u64,
    /// Frames that failed their checksum.
    corrupt_frames: u64,
    offset: u64,
    /// The closing statistics frame, once read.
    final_stats: Option<Vec<u8>>,
    /// The file ended inside a frame.
    cut: Option<Cut>,
    /// Nothing more is read: the end of the file, a cut, or a frame whose
    /// length failed its check.
    ended: bool,
    /// Bytes after a frame whose length failed its check, left unread.
    unreadable: bool,
}

impl Reader<BufReader<File>> {
    /// Opens the recording at `path`.
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        Reader::open_named(path, &path.display().to_string())
    }

    /// Opens the recording at `path`, called `name` in messages (a name
    /// made safe to print: file names may hold terminal escapes).
    pub fn open_named(path: &Path, name: &str) -> Result<Self, RecordingError> {
        let name = name.to_string();
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
        // The preamble first: the format says how long the rest is.
        let mut fixed = [0u8; MAX_FIXED_HEADER];
        let got = read_full(&mut input, &mut fixed[..PREAMBLE]).map_err(io_err)?;
        if got < MAGIC.len() || fixed[..8] != MAGIC {
            // A short file that is a prefix of the magic is still not ours.
            return Err(RecordingError::BadMagic { path: path.into() });
        }
        let truncated = |need: usize, have: usize| RecordingError::Truncated {
            path: path.into(),
            what: "header".into(),
            need: need as u64,
            have: have as u64,
        };
        // A format too short to name itself is a cut header, whatever it is.
        if got < 10 {
            return Err(truncated(PREAMBLE - got, got));
        }
        let u16_at = |f: &[u8], i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
        let format = u16_at(&fixed, 8);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&format) {
            return Err(RecordingError::BadFormat {
                path: path.into(),
                found: format,
            });
        }
        let fixed_len = fixed_header(format);
        let got = got + read_full(&mut input, &mut fixed[got..fixed_len]).map_err(io_err)?;
        if got < fixed_len {
            return Err(truncated(fixed_len - got, got));
        }
        let abi_version = u16_at(&fixed, 10);
        if let Err(mismatch) = AbiVersion::from_field(abi_version).check() {
            return Err(RecordingError::AbiMismatch {
                path: path.into(),
                mismatch,
            });
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&fixed[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let header_len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as usize;
        let start_unix_ns = u64_at(PREAMBLE);
        let start_clock_ns = (format >= ANCHOR_FORMAT)
            .then(|| u64_at(PREAMBLE + 8))
            .filter(|&c| c != NO_CLOCK);
        let page_size =
            if format >= PAGE_SIZE_FORMAT {
                let at = PREAMBLE + 8 + 8;
                match u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]) {
                    NO_PAGE_SIZE => None,
                    bytes => Some(PageSize::new(u64::from(bytes)).map_err(|_| {
                        RecordingError::Corrupt {
                            path: path.into(),
                            what: format!(
                                "page size {bytes} is not a power of two from 4096 to 65536"
                            ),
                        }
                    })?),
                }
            } else {
                None
            };
        let host_len = usize::from(u16_at(&fixed, fixed_len - 2));
        if host_len > MAX_HOST || header_len != fixed_len + host_len {
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
            return Err(truncated(host_len - got, fixed_len + got));
        }
        let header = Header {
            abi_version,
            start_unix_ns,
            start_clock_ns,
            page_size,
            host: String::from_utf8_lossy(&host).into_owned(),
        };
        Ok(Reader {
            input,
            path: path.into(),
            format,
            header,
            frames: 0,
            batches: 0,
            corrupt_frames: 0,
            offset: header_len as u64,
            final_stats: None,
            cut: None,
            ended: false,
            unreadable: false,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's format version.
    pub fn format(&self) -> u16 {
        self.format
    }

    /// Whether its frames carry checksums (format 3 on).
    pub fn checksummed(&self) -> bool {
        self.format >= CHECKSUM_FORMAT
    }

    /// Batches read so far.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Frames that failed their checksum so far.
    pub fn corrupt_frames(&self) -> u64 {
        self.corrupt_frames
    }

    /// Where the file ended inside a frame, once reading reached it.
    pub fn cut(&self) -> Option<&Cut> {
        self.cut.as_ref()
    }

    /// Bytes of the file read so far (whole frames and the header).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether reading is over: [`Reader::next_frame`] returns nothing more.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads the next frame, a batch into `buf`; `Ok(None)` at the end of
    /// the file, or of what can be read of it (see [`Reader::cut`]). The
    /// closing statistics frame is kept for [`Reader::final_stats`].
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, RecordingError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let frame = match self.read_frame(buf)? {
                None => {
                    self.ended = true;
                    return Ok(None);
                }
                Some(Frame::Batch(n)) => n,
                Some(corrupt) => return Ok(Some(corrupt)),
            };
            let bytes = buf.get(..frame).unwrap_or(&[]);
            if !is_stats_frame(bytes) {
                self.batches += 1;
                return Ok(Some(Frame::Batch(frame)));
            }
            self.final_stats = Some(bytes.to_vec());
        }
    }

    /// The kext's statistics that close the recording (format 2 on), once
    /// the whole file was read: a partial replay has not seen the drops they
    /// count, and a cut file never reached them.
    pub fn final_stats(&self) -> Option<&[u8]> {
        self.final_stats
            .as_deref()
            .filter(|_| self.ended && self.cut.is_none() && !self.unreadable)
    }

    fn read_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, RecordingError> {
        let io_err = |err| RecordingError::Io {
            path: self.path.clone(),
            err,
        };
        let head_len = if self.checksummed() { FRAME_HEAD } else { 4 };
        let mut head = [0u8; FRAME_HEAD];
        let got = read_full(&mut self.input, &mut head[..head_len]).map_err(io_err)?;
        let index = self.frames + 1;
        if got == 0 {
            return Ok(None);
        }
        if got < head_len {
            self.cut_at(index, got as u64, None);
            return Ok(None);
        }
        let len_bytes = [head[0], head[1], head[2], head[3]];
        let len = u32::from_le_bytes(len_bytes);
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if self.checksummed() && crc32fast::hash(&len_bytes) != word(4) {
            // The length is not to be trusted: nothing after it can be found.
            self.corrupt_frames += 1;
            self.unreadable = true;
            self.ended = true;
            return Ok(Some(Frame::Corrupt(format!(
                "{}: frame {index} at byte {}: its length fails its checksum; the rest of the file cannot be read",
                self.path, self.offset
            ))));
        }
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
            self.cut_at(index, (head_len + got) as u64, Some((len - got) as u64));
            return Ok(None);
        }
        self.frames = index;
        let at = self.offset;
        self.offset += (head_len + len) as u64;
        if self.checksummed() && crc32fast::hash(buf.get(..len).unwrap_or(&[])) != word(8) {
            self.corrupt_frames += 1;
            return Ok(Some(Frame::Corrupt(format!(
                "{}: frame {index} at byte {at} ({len} bytes) fails its checksum; skipped",
                self.path
            ))));
        }
        Ok(Some(Frame::Batch(len)))
    }

    fn cut_at(&mut self, frame: u64, bytes: u64, missing: Option<u64>) {
        self.cut = Some(Cut {
            frame,
            offset: self.offset,
            bytes,
            missing,
        });
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
            start_clock_ns: Some(86_400_123_456_789),
            page_size: Some(PageSize::SIXTEEN_K),
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

    /// A recording of a format before checksums: `len | bytes` frames.
    fn unchecked_recording(format: u16, batches: &[&[u8]]) -> Vec<u8> {
        let mut v = encode_header_of(format, &header());
        for b in batches {
            v.extend_from_slice(&(b.len() as u32).to_le_bytes());
            v.extend_from_slice(b);
        }
        v
    }

    /// Every frame of `bytes`, until the end of what can be read.
    fn read_all(bytes: &[u8]) -> Result<(Vec<Frame>, Reader<&[u8]>), RecordingError> {
        let mut r = Reader::new(bytes, "t")?;
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        while let Some(f) = r.next_frame(&mut buf)? {
            frames.push(f);
        }
        Ok((frames, r))
    }

    #[test]
    fn frames_round_trip_with_the_header() {
        let bytes = recording(&[b"first", b"", b"third batch"]);
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(r.format(), FORMAT_VERSION);
        let mut buf = Vec::new();
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(Frame::Batch(5)));
        assert_eq!(&buf[..5], b"first");
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(Frame::Batch(0)));
        assert_eq!(r.next_frame(&mut buf).unwrap(), Some(Frame::Batch(11)));
        assert_eq!(&buf[..11], b"third batch");
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);
        assert_eq!((r.batches(), r.corrupt_frames(), r.cut()), (3, 0, None));
    }

    #[test]
    fn every_cut_reads_up_to_the_last_whole_frame_and_says_so() {
        let batches: [&[u8]; 3] = [b"0123456789", b"abcdef", b"xyz"];
        let bytes = recording(&batches);
        let header_len = encode_header(&header()).len();
        // Where each frame ends.
        let mut ends = vec![header_len];
        for b in batches {
            ends.push(ends.last().unwrap() + FRAME_HEAD + b.len());
        }
        assert_eq!(*ends.last().unwrap(), bytes.len());
        for cut in 0..=bytes.len() {
            let res = read_all(&bytes[..cut]);
            if cut < header_len {
                // Nothing to read without a header: refused, clearly.
                let e = res.unwrap_err();
                assert!(
                    matches!(
                        e,
                        RecordingError::Truncated { .. } | RecordingError::BadMagic { .. }
                    ),
                    "cut {cut}: {e:?}"
                );
                continue;
            }
            let (frames, r) = res.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            let want: Vec<Frame> = batches[..whole]
                .iter()
                .map(|b| Frame::Batch(b.len()))
                .collect();
            assert_eq!(frames, want, "cut {cut}");
            if ends.contains(&cut) {
                assert_eq!(r.cut(), None, "cut {cut}");
            } else {
                let c = r.cut().unwrap_or_else(|| panic!("cut {cut} not reported"));
                assert_eq!(c.frame, whole as u64 + 1, "cut {cut}");
                assert_eq!(c.offset, ends[whole] as u64, "cut {cut}");
                assert_eq!(c.bytes, (cut - ends[whole]) as u64, "cut {cut}");
                if c.bytes >= FRAME_HEAD as u64 {
                    assert_eq!(c.missing, Some((ends[whole + 1] - cut) as u64));
                }
                let msg = c.to_string();
                assert!(
                    msg.contains("cut off") && msg.contains(&format!("{} bytes", c.bytes)),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn a_flipped_byte_in_any_frame_is_detected() {
        let batches: [&[u8]; 3] = [b"0123456789", b"abcdef", b"xyz"];
        let bytes = recording(&batches);
        let header_len = encode_header(&header()).len();
        for at in header_len..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let caught = match read_all(&bad) {
                    // A length that no longer passes MAX_FRAME is refused
                    // outright; anything else is a corrupt frame.
                    Err(e) => matches!(e, RecordingError::Corrupt { .. }),
                    Ok((frames, r)) => {
                        frames.iter().any(|f| matches!(f, Frame::Corrupt(_)))
                            && r.corrupt_frames() > 0
                    }
                };
                assert!(caught, "byte {at} ^ {flip:#x} went unnoticed");
            }
        }
        // A flip inside a batch skips that frame only.
        let mut bad = bytes.clone();
        bad[header_len + FRAME_HEAD + 3] ^= 1;
        let (frames, r) = read_all(&bad).unwrap();
        assert!(
            matches!(&frames[0], Frame::Corrupt(m) if m.contains("frame 1") && m.contains("checksum"))
        );
        assert_eq!(&frames[1..], &[Frame::Batch(6), Frame::Batch(3)]);
        assert_eq!((r.batches(), r.corrupt_frames()), (2, 1));
        // A flip in a length stops the reading there: nothing after it can
        // be located.
        let mut bad = bytes.clone();
        bad[header_len + FRAME_HEAD + 10] ^= 1;
        let (frames, r) = read_all(&bad).unwrap();
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(matches!(&frames[1], Frame::Corrupt(m) if m.contains("cannot be read")));
        assert_eq!(r.final_stats(), None);
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
    fn the_anchor_round_trips_through_the_header() {
        let bytes = recording(&[b"x"]);
        let r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(
            r.header().anchor(),
            Some(Anchor {
                unix_ns: 1_700_000_000_000_000_000,
                clock_ns: 86_400_123_456_789
            })
        );
        // No reading to keep: written as the marker, read back as none.
        let h = Header {
            start_clock_ns: None,
            ..header()
        };
        let bytes = encode_header(&h);
        assert_eq!(bytes.len(), 8 + 2 + 2 + 4 + 8 + 8 + 4 + 2 + 8);
        let r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!((r.header(), r.header().anchor()), (&h, None));
    }

    #[test]
    fn the_page_size_round_trips_through_the_header() {
        for page_size in [Some(PageSize::SIXTEEN_K), Some(PageSize::FOUR_K), None] {
            let h = Header {
                page_size,
                ..header()
            };
            let mut bytes = encode_header(&h);
            bytes.extend_from_slice(&frame_head(1, b"x"));
            bytes.push(b'x');
            let (frames, r) = read_all(&bytes).unwrap();
            assert_eq!(frames, [Frame::Batch(1)]);
            assert_eq!((r.format(), r.header()), (5, &h));
        }
    }

    #[test]
    fn format_4_is_read_with_its_anchor_and_no_page_size() {
        let mut bytes = encode_header_of(4, &header());
        bytes.extend_from_slice(&frame_head(5, b"first"));
        bytes.extend_from_slice(b"first");
        let (frames, r) = read_all(&bytes).unwrap();
        assert_eq!(frames, [Frame::Batch(5)]);
        assert!(r.checksummed() && r.format() == 4);
        assert_eq!(r.header().anchor(), header().anchor());
        assert_eq!(r.header().page_size, None);
        // Its header is 4 bytes shorter: no page size in it.
        assert_eq!(
            encode_header_of(4, &header()).len() + 4,
            encode_header(&header()).len()
        );
    }

    #[test]
    fn a_header_page_size_that_is_no_page_size_is_corruption() {
        let at = PREAMBLE + 8 + 8;
        for bad in [1u32, 2048, 4097, 12288, 1 << 17, u32::MAX] {
            let mut bytes = encode_header(&header());
            bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
            let e = Reader::new(bytes.as_slice(), "t").unwrap_err();
            assert!(
                matches!(&e, RecordingError::Corrupt { what, .. }
                    if what.contains(&format!("page size {bad} "))),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn format_3_is_read_with_checksums_and_no_anchor() {
        let mut bytes = encode_header_of(3, &header());
        for b in [&b"first"[..], b"second"] {
            bytes.extend_from_slice(&frame_head(b.len() as u32, b));
            bytes.extend_from_slice(b);
        }
        let (frames, r) = read_all(&bytes).unwrap();
        assert_eq!(frames, [Frame::Batch(5), Frame::Batch(6)]);
        assert!(r.checksummed() && r.format() == 3);
        let h = r.header();
        assert_eq!(h.start_unix_ns, header().start_unix_ns);
        assert_eq!((h.start_clock_ns, h.anchor()), (None, None));
        assert_eq!(h.page_size, None);
        // Its header is 8 bytes shorter than format 4's: no clock reading.
        assert_eq!(
            encode_header_of(3, &header()).len() + 8,
            encode_header_of(4, &header()).len()
        );
    }

    #[test]
    fn formats_1_and_2_are_read_without_checksums() {
        for format in [1, 2] {
            let bytes = unchecked_recording(format, &[b"batch", b"two"]);
            let (frames, r) = read_all(&bytes).unwrap();
            assert_eq!(frames, [Frame::Batch(5), Frame::Batch(3)]);
            assert!(!r.checksummed() && r.format() == format);
            // Cut inside the last frame: read up to it.
            let (frames, r) = read_all(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!(frames, [Frame::Batch(5)]);
            assert_eq!(
                r.cut().map(|c| (c.frame, c.bytes, c.missing)),
                Some((2, 6, Some(1)))
            );
        }
    }

    #[test]
    fn only_stats_bytes_close_a_recording() {
        let mut buf = Vec::new();
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        let e = w.write_stats(b"not stats").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut stats = raw::MT_STATS_MAGIC.to_le_bytes().to_vec();
        stats.extend_from_slice(&[0; 76]);
        let before = w.bytes();
        w.write_stats(&stats).unwrap();
        assert_eq!(w.frames(), 0, "the closing frame is no batch");
        assert_eq!(w.bytes() - before, FRAME_HEAD as u64 + 80);
        assert!(is_stats_frame(&stats) && !is_stats_frame(b"MSB") && !is_stats_frame(b""));

        w.write_batch(b"after").unwrap();
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(
            r.next_frame(&mut buf).unwrap(),
            Some(Frame::Batch(5)),
            "stats skipped"
        );
        assert_eq!(r.final_stats(), None, "not before the end");
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);
        assert_eq!(r.final_stats(), Some(stats.as_slice()));
        // A cut file never reached its closing counters, whatever it read.
        let (_, r) = read_all(&bytes[..bytes.len() - 1]).unwrap();
        assert!(r.cut().is_some() && r.final_stats().is_none());
    }

    #[test]
    fn absurd_frame_lengths_are_corruption() {
        for mut bytes in [recording(&[]), unchecked_recording(2, &[])] {
            let len = u32::MAX;
            bytes.extend_from_slice(
                &frame_head(len, b"")[..if bytes[8] >= 3 { FRAME_HEAD } else { 4 }],
            );
            let e = read_all(&bytes).unwrap_err();
            assert!(matches!(e, RecordingError::Corrupt { .. }), "{e:?}");
        }
    }

    #[test]
    fn a_huge_declared_frame_in_a_short_file_allocates_what_is_there() {
        // Found by fuzzing: the reader sized the buffer from the length
        // before reading, so 1 KiB of file cost 1 GiB of memory.
        let mut bytes = recording(&[]);
        bytes.extend_from_slice(&frame_head(MAX_FRAME, b""));
        bytes.extend_from_slice(&[7; 1000]);
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        let mut buf = Vec::new();
        assert_eq!(r.next_frame(&mut buf).unwrap(), None);
        let cut = r.cut().unwrap();
        assert_eq!(cut.missing, Some(u64::from(MAX_FRAME) - 1000), "{cut:?}");
        assert!(buf.capacity() <= 2 * READ_STEP, "{} bytes", buf.capacity());

        // A frame longer than one step still arrives whole.
        let big: Vec<u8> = (0..3 * READ_STEP + 5).map(|i| i as u8).collect();
        let bytes = recording(&[&big]);
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(
            r.next_frame(&mut buf).unwrap(),
            Some(Frame::Batch(big.len()))
        );
        assert_eq!(&buf[..big.len()], big.as_slice());
    }

    #[test]
    fn long_host_names_are_cut_not_corrupting() {
        let h = Header {
            host: "h".repeat(1000),
            ..header()
        };
        let mut bytes = encode_header(&h);
        bytes.extend_from_slice(&frame_head(0, b""));
        let mut r = Reader::new(bytes.as_slice(), "t").unwrap();
        assert_eq!(r.header().host.len(), MAX_HOST);
        assert_eq!(
            r.next_frame(&mut Vec::new()).unwrap(),
            Some(Frame::Batch(0))
        );
    }
}
