//! The artifact on disk: flat `.npy` arrays per split that NumPy memory-maps, written into a
//! temporary folder that is renamed into place only when complete.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bytes reserved for an `.npy` header, so the shape can be patched in once the length is known
/// (a multiple of 64, as the format recommends for aligned memory maps).
const NPY_HEADER_LEN: usize = 128;

/// A 1-D `.npy` file (or a 2-D one of `cols` columns, rows pushed whole) written in one
/// streaming pass.
#[derive(Debug)]
pub struct NpyWriter {
    path: PathBuf,
    out: BufWriter<fs_err::File>,
    descr: &'static str,
    itemsize: usize,
    cols: Option<u64>,
    len: u64,
}

/// Element types the artifact uses.
pub trait NpyElement: Copy {
    const DESCR: &'static str;
    fn write_all(values: &[Self], out: &mut impl Write) -> std::io::Result<()>;
}

macro_rules! npy_element {
    ($t:ty, $descr:expr) => {
        impl NpyElement for $t {
            const DESCR: &'static str = $descr;
            fn write_all(values: &[Self], out: &mut impl Write) -> std::io::Result<()> {
                for v in values {
                    out.write_all(&v.to_le_bytes())?;
                }
                Ok(())
            }
        }
    };
}
npy_element!(u8, "|u1");
npy_element!(u32, "<u4");
npy_element!(u64, "<u8");

fn npy_header(descr: &str, len: u64, cols: Option<u64>) -> Vec<u8> {
    let shape = match cols {
        None => format!("({len},)"),
        Some(c) => format!("({}, {c})", len / c.max(1)),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let mut h = Vec::with_capacity(NPY_HEADER_LEN);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((NPY_HEADER_LEN - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(NPY_HEADER_LEN - 1, b' ');
    h.push(b'\n');
    h
}

impl NpyWriter {
    pub fn create<T: NpyElement>(path: PathBuf) -> Result<Self> {
        Self::with_shape::<T>(path, None)
    }

    /// A 2-D array of `cols` columns; [`NpyWriter::push`] is given whole rows.
    pub fn create_rows<T: NpyElement>(path: PathBuf, cols: u64) -> Result<Self> {
        Self::with_shape::<T>(path, Some(cols))
    }

    fn with_shape<T: NpyElement>(path: PathBuf, cols: Option<u64>) -> Result<Self> {
        let file = fs_err::File::create(&path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&npy_header(T::DESCR, 0, cols))
            .map_err(|e| Error::io(&path, e))?;
        Ok(NpyWriter {
            path,
            out,
            descr: T::DESCR,
            itemsize: std::mem::size_of::<T>(),
            cols,
            len: 0,
        })
    }

    pub fn push<T: NpyElement>(&mut self, values: &[T]) -> Result<()> {
        debug_assert_eq!(T::DESCR, self.descr);
        debug_assert_eq!(values.len() as u64 % self.cols.unwrap_or(1), 0);
        T::write_all(values, &mut self.out).map_err(|e| Error::io(&self.path, e))?;
        self.len += values.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the final shape into the header and syncs the file to disk.
    pub fn finish(self) -> Result<u64> {
        let NpyWriter {
            path,
            out,
            descr,
            itemsize,
            cols,
            len,
        } = self;
        let mut file = out
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        let io = |e| Error::io(&path, e);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&npy_header(descr, len, cols)).map_err(io)?;
        file.sync_all().map_err(io)?;
        debug_assert_eq!(
            file.metadata().map(|m| m.len()).unwrap_or(0),
            NPY_HEADER_LEN as u64 + len * itemsize as u64
        );
        Ok(len)
    }
}

/// A folder that becomes visible at its final path only when [`StagingDir::publish`] succeeds;
/// dropped unpublished (an error, Ctrl-C, a panic), it is deleted.
#[derive(Debug)]
pub struct StagingDir {
    tmp: Option<tempfile::TempDir>,
    target: PathBuf,
}

impl StagingDir {
    pub fn new(target: &Path) -> Result<Self> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs_err::create_dir_all(&parent)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        // A leading dot and a `.partial` suffix: no one mistakes it for an artifact.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        Ok(StagingDir {
            tmp: Some(tmp),
            target: target.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        self.tmp.as_ref().map(|t| t.path()).unwrap_or(&self.target)
    }

    /// Moves the finished folder to its final path, replacing what is there (which
    /// [`crate::output::claim`] said may be replaced): one atomic exchange of the two paths
    /// where the platform has it, so a reader sees the old artifact or the new one, never none.
    pub fn publish(mut self) -> Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let staged = tmp.keep();
        sync_dir(&staged)?;
        match std::fs::symlink_metadata(&self.target) {
            Err(_) => fs_err::rename(&staged, &self.target)?,
            Ok(old) => {
                swap(&staged, &self.target)?;
                // The old content now sits under the staging name; if removing it fails, the
                // next run's claim removes it.
                let _ = if old.is_dir() {
                    std::fs::remove_dir_all(&staged)
                } else {
                    std::fs::remove_file(&staged)
                };
            }
        }
        if let Some(parent) = self.target.parent() {
            if !parent.as_os_str().is_empty() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }
}

/// Exchanges the entries at `staged` and `target`.
fn swap(staged: &Path, target: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        if renameat_with(CWD, staged, CWD, target, RenameFlags::EXCHANGE).is_ok() {
            return Ok(());
        }
    }
    // No exchange here (another OS, or a filesystem without it): the old entry is moved aside
    // first, since rename cannot replace a non-empty folder.
    let aside = staged.with_extension("old");
    fs_err::rename(target, &aside)?;
    if let Err(e) = fs_err::rename(staged, target) {
        let _ = std::fs::rename(&aside, target);
        return Err(e.into());
    }
    fs_err::rename(&aside, staged)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directories can be fsynced on Unix; elsewhere this is best effort.
    #[cfg(unix)]
    fs_err::File::open(dir)?
        .sync_all()
        .map_err(|e| Error::io(dir, e))?;
    Ok(())
}

/// The size of a file and its xxh3-64 digest (16 hex digits), read in one pass: what the
/// manifest records of each array, and what every reader checks against.
pub fn digest(path: &Path) -> Result<(u64, String)> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let bytes = read_chunks(path, |chunk| hasher.update(chunk))?;
    Ok((bytes, format!("{:016x}", hasher.digest())))
}

/// Hands the whole file to `f` a chunk at a time; returns its size.
pub fn read_chunks(path: &Path, mut f: impl FnMut(&[u8])) -> Result<u64> {
    use std::io::Read;
    let mut file = fs_err::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(bytes);
        }
        f(&buf[..n]);
        bytes += n as u64;
    }
}

/// Writes a small file completely and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs_err::File::create(path)?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_valid_and_aligned() {
        let h = npy_header("<u4", 123_456_789_012, None);
        assert_eq!(h.len(), NPY_HEADER_LEN);
        assert!(std::str::from_utf8(&h[10..])
            .unwrap()
            .contains("'shape': (123456789012,)"));
        assert_eq!(
            u16::from_le_bytes([h[8], h[9]]) as usize + 10,
            NPY_HEADER_LEN
        );
    }

    #[test]
    fn npy_writer_patches_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let mut w = NpyWriter::create::<u32>(p.clone()).unwrap();
        w.push(&[1u32, 2, 3]).unwrap();
        w.push(&[4u32]).unwrap();
        assert_eq!(w.finish().unwrap(), 4);
        let bytes = fs_err::read(&p).unwrap();
        assert!(std::str::from_utf8(&bytes[10..NPY_HEADER_LEN])
            .unwrap()
            .contains("(4,)"));
        assert_eq!(
            &bytes[NPY_HEADER_LEN..NPY_HEADER_LEN + 4],
            &1u32.to_le_bytes()
        );
        assert_eq!(bytes.len(), NPY_HEADER_LEN + 16);
    }

    #[test]
    fn a_rows_writer_declares_two_dimensions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.npy");
        let mut w = NpyWriter::create_rows::<u64>(p.clone(), 4).unwrap();
        w.push(&[1u64, 2, 3, 4]).unwrap();
        w.push(&[5u64, 6, 7, 8]).unwrap();
        assert_eq!(w.finish().unwrap(), 8);
        let bytes = fs_err::read(&p).unwrap();
        assert!(std::str::from_utf8(&bytes[10..NPY_HEADER_LEN])
            .unwrap()
            .contains("'shape': (2, 4)"));
        assert_eq!(bytes.len(), NPY_HEADER_LEN + 64);
    }

    #[test]
    fn staging_dir_is_invisible_until_published_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        {
            let s = StagingDir::new(&target).unwrap();
            write_synced(&s.path().join("a"), b"1").unwrap();
            assert!(!target.exists());
        }
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 0);
        let s = StagingDir::new(&target).unwrap();
        write_synced(&s.path().join("a"), b"1").unwrap();
        s.publish().unwrap();
        assert_eq!(fs_err::read(target.join("a")).unwrap(), b"1");
        // Publishing again replaces the old artifact.
        let s = StagingDir::new(&target).unwrap();
        write_synced(&s.path().join("b"), b"2").unwrap();
        s.publish().unwrap();
        assert!(!target.join("a").exists() && target.join("b").exists());
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 1);
    }
}
