//! A recording replayed as a [`Source`] (`--source file:FILE`, or a
//! command's INPUT argument).

use crate::recording::{Header, Reader};
use crate::source::{Next, Source, SourceError};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// A recording as a [`Source`].
#[derive(Debug)]
pub struct FileSource {
    reader: Reader<BufReader<File>>,
}

impl FileSource {
    /// Opens and validates the recording at `path`.
    pub fn open(path: &Path) -> Result<FileSource, SourceError> {
        Ok(FileSource {
            reader: Reader::open(path)?,
        })
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
            Some(n) => Next::Batch(n),
            None => Next::End,
        })
    }

    fn final_stats(&mut self) -> Option<Vec<u8>> {
        self.reader.final_stats().map(<[u8]>::to_vec)
    }
}
