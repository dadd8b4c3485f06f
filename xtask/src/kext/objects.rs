//! Loading Mach-O objects from files and static archives, for the checks.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use object::read::archive::ArchiveFile;

/// One object file's bytes and a name for messages (`lib.a(member.o)` for archive members).
#[derive(Debug, Clone)]
pub struct ObjFile {
    /// Where it came from.
    pub name: String,
    /// The whole object.
    pub data: Vec<u8>,
}

/// Loads `path`: every member of a static archive, or the file itself.
pub fn load(path: &Path) -> Result<Vec<ObjFile>> {
    let data = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let shown = path.display().to_string();
    if !data.starts_with(b"!<arch>\n") {
        return Ok(vec![ObjFile { name: shown, data }]);
    }
    let archive =
        ArchiveFile::parse(&*data).with_context(|| format!("{shown}: bad static archive"))?;
    let mut out = Vec::new();
    for member in archive.members() {
        let member = member.with_context(|| format!("{shown}: bad archive member"))?;
        let name = String::from_utf8_lossy(member.name()).into_owned();
        // The ranlib symbol index is not an object.
        if name.starts_with("__.SYMDEF") {
            continue;
        }
        let bytes = member
            .data(&*data)
            .with_context(|| format!("{shown}({name}): unreadable"))?;
        out.push(ObjFile {
            name: format!("{shown}({name})"),
            data: bytes.to_vec(),
        });
    }
    Ok(out)
}

/// Loads several paths in order.
pub fn load_all<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<Vec<ObjFile>> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(load(p)?);
    }
    Ok(out)
}

/// The thin images of an executable: the slices of a universal (fat) file, or the file itself.
pub fn thin_images(data: &[u8]) -> Result<Vec<&[u8]>> {
    use object::macho;
    use object::read::macho::{FatArch, MachOFatFile32};
    let magic = data
        .get(..4)
        .map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]));
    if magic != Some(macho::FAT_MAGIC) {
        return Ok(vec![data]);
    }
    let fat = MachOFatFile32::parse(data).context("bad universal header")?;
    fat.arches()
        .iter()
        .map(|a| a.data(data).context("slice outside the file"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_file_is_one_object_and_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.o");
        fs::write(&p, b"\xcf\xfa\xed\xfe rest").unwrap();
        let objs = load(&p).unwrap();
        assert_eq!(objs.len(), 1);
        assert!(objs[0].name.ends_with("x.o"));
        assert!(load(&dir.path().join("none.o")).is_err());
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.a");
        fs::write(&p, b"!<arch>\nshort").unwrap();
        assert!(load(&p).is_err());
    }
}
