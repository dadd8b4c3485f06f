//! A recording replayed as a [`Source`] (`--source file:FILE`, or a
//! command's INPUT argument).

use crate::pagesize::PageSize;
use crate::recording::{Cut, Frame, Header, PAGE_SIZE_FORMAT, Reader};
use crate::source::{Next, Source, SourceError};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// A recording as a [`Source`].
#[derive(Debug)]
pub struct FileSource {
    reader: Reader<BufReader<File>>,
    /// The file's size when opened.
    size: u64,
}

impl FileSource {
    /// Opens and validates the recording at `path`.
    pub fn open(path: &Path) -> Result<FileSource, SourceError> {
        let name = crate::text::shown(&path.display().to_string()).into_owned();
        let reader = Reader::open_named(path, &name)?;
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        Ok(FileSource { reader, size })
    }

    /// The recording's header.
    pub fn header(&self) -> &Header {
        self.reader.header()
    }

    /// The reader, for what only a recording knows (format, counts).
    pub fn reader(&self) -> &Reader<BufReader<File>> {
        &self.reader
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("the recording {}", self.reader.path())
    }

    fn is_live(&self) -> bool {
        false
    }

    fn anchor(&self) -> Option<crate::wallclock::Anchor> {
        self.reader.header().anchor()
    }

    fn page_size(&self) -> Result<PageSize, String> {
        match (self.reader.header().page_size, self.reader.format()) {
            (Some(size), _) => Ok(size),
            (None, format) if format < PAGE_SIZE_FORMAT => {
                Err(format!("recording format {format}"))
            }
            (None, _) => Err("the recording does not say".into()),
        }
    }

    fn next_batch(&mut self, buf: &mut Vec<u8>) -> Result<Next, SourceError> {
        Ok(match self.reader.next_frame(buf)? {
            Some(Frame::Batch(n)) => Next::Batch(n),
            Some(Frame::Corrupt(msg)) => Next::Corrupt(msg),
            None => Next::End,
        })
    }

    /// A recording's statistics are its closing frame: reads the rest of
    /// the file to reach it.
    fn stats(&mut self) -> Result<Vec<u8>, SourceError> {
        let mut buf = Vec::new();
        while self.reader.next_frame(&mut buf)?.is_some() {}
        if let Some(s) = self.reader.final_stats() {
            return Ok(s.to_vec());
        }
        let path = self.reader.path();
        Err(SourceError::Unsupported(
            if let Some(cut) = self.reader.cut() {
                format!(
                    "{path} has no kext statistics: {cut}, so the closing statistics frame is missing"
                )
            } else if self.reader.format() < 2 {
                format!("{path} has no kext statistics: recording format 1 did not keep them")
            } else {
                format!(
                    "{path} has no kext statistics: the recording does not end with them (recorded from a source without statistics, or its end is unreadable)"
                )
            },
        ))
    }

    fn cut(&self) -> Option<Cut> {
        self.reader.cut().cloned()
    }

    fn progress(&self) -> Option<(u64, u64)> {
        // At the end, what was not read (a cut frame, bytes after a bad
        // length) is done too.
        let done = if self.reader.ended() {
            self.size
        } else {
            self.reader.offset().min(self.size)
        };
        Some((done, self.size))
    }

    fn final_stats(&mut self) -> Option<Vec<u8>> {
        self.reader.final_stats().map(<[u8]>::to_vec)
    }
}
