//! A recording replayed as a [`Source`] (`--source file:FILE`, or a
//! command's INPUT argument).

use crate::recording::{Header, Reader, encode_header};
use crate::source::{Next, Source, SourceError};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// A recording as a [`Source`].
#[derive(Debug)]
pub struct FileSource {
    reader: Reader<BufReader<File>>,
    /// Bytes of the file read so far (header and whole frames).
    read: u64,
    /// The file's size when opened.
    size: u64,
}

impl FileSource {
    /// Opens and validates the recording at `path`.
    pub fn open(path: &Path) -> Result<FileSource, SourceError> {
        let reader = Reader::open(path)?;
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let read = encode_header(reader.header()).len() as u64;
        Ok(FileSource { reader, read, size })
    }

    /// The recording's header.
    pub fn header(&self) -> &Header {
        self.reader.header()
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("the recording {}", self.reader.path())
    }

    fn is_live(&self) -> bool {
        false
    }

    fn next_batch(&mut self, buf: &mut Vec<u8>) -> Result<Next, SourceError> {
        Ok(match self.reader.next_frame(buf)? {
            Some(n) => {
                // A frame is its u32 length and the batch.
                self.read += 4 + n as u64;
                Next::Batch(n)
            }
            None => {
                self.read = self.size;
                Next::End
            }
        })
    }

    fn progress(&self) -> Option<(u64, u64)> {
        Some((self.read.min(self.size), self.size))
    }

    fn final_stats(&mut self) -> Option<Vec<u8>> {
        self.reader.final_stats().map(<[u8]>::to_vec)
    }
}
