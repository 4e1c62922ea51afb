//! Where `prepare` may write: ftx replaces only what it wrote itself.
//!
//! Before any work, [`claim`] checks the output path and takes an exclusive lock on it:
//! a symbolic link is refused (ftx never writes through a link it did not make); a path that
//! contains an input or the working directory is refused even with `--force`; an existing
//! path is replaced only when it is an empty folder, or a prepared artifact or shard holding
//! nothing but what its manifest names, anything else only with `--force`. With the lock held, staging
//! folders left by a dead process (`.NAME.*.partial`, `.NAME.*.old`) are removed.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::MANIFEST;

/// The kind written into every prepared artifact's manifest (`"format"`).
pub const PREPARED: &str = "ftx-prepared";
/// Files of a prepared artifact besides the manifest and the arrays it names.
const OWN_FILES: &[&str] = &["rejects.jsonl"];

/// An output path claimed for writing: the lock file is removed and the lock released when
/// this is dropped.
#[derive(Debug)]
pub struct Claim {
    lock: File,
    lock_path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed while still locked; a writer that opened it meanwhile sees that its lock is
        // on a file no longer at the path (see `lock`) and tries again.
        let _ = std::fs::remove_file(&self.lock_path);
        let _ = self.lock.unlock();
    }
}

/// Checks `target` may be written (see the module) and locks it for this process.
pub fn claim(target: &Path, inputs: &[PathBuf], force: bool) -> Result<Claim> {
    let shown = target.display();
    let meta = std::fs::symlink_metadata(target);
    if meta.as_ref().is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Config(format!(
            "--out {shown} is a symbolic link; ftx does not write through links: give the \
             path it points to, or another --out"
        )));
    }
    let absolute = resolved(target)?;
    for input in inputs {
        if let Ok(input_path) = input.canonicalize() {
            if input_path.starts_with(&absolute) {
                return Err(Error::Config(format!(
                    "--out {shown} contains the input {}; ftx never replaces its inputs: \
                     choose another --out",
                    input.display()
                )));
            }
        }
    }
    if let Ok(cwd) = std::env::current_dir().and_then(|d| d.canonicalize()) {
        if cwd.starts_with(&absolute) {
            return Err(Error::Config(format!(
                "--out {shown} contains the working directory {}; choose another --out",
                cwd.display()
            )));
        }
    }
    if let Ok(meta) = meta {
        if !force {
            if let Some(why) = not_replaceable(target, meta.is_dir())? {
                return Err(Error::Config(format!(
                    "--out {shown} {why}; ftx replaces only an empty folder or an artifact it \
                     wrote itself: choose another --out, or --force to replace it"
                )));
            }
        }
    }
    let (lock, lock_path) = lock(target)?;
    remove_stale(target);
    Ok(Claim { lock, lock_path })
}

/// Why an existing `target` is not ftx's to replace, or None when it is.
fn not_replaceable(target: &Path, is_dir: bool) -> Result<Option<String>> {
    if !is_dir {
        return Ok(Some("is a file, not a folder".into()));
    }
    let mut names = Vec::new();
    for entry in fs_err::read_dir(target)? {
        let entry = entry.map_err(|e| Error::io(target, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(None);
    }
    let manifest = std::fs::read_to_string(target.join(MANIFEST))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let Some(manifest) =
        manifest.filter(|m| m["format"] == PREPARED || m["format"] == crate::shard::SHARD)
    else {
        return Ok(Some(
            "is a folder that is not a prepared artifact or shard".into(),
        ));
    };
    let mut own: Vec<String> = OWN_FILES
        .iter()
        .chain(&crate::shard::SHARD_FILES)
        .map(|s| s.to_string())
        .collect();
    own.push(MANIFEST.into());
    for split in manifest["splits"].as_object().into_iter().flatten() {
        for file in split.1["files"].as_object().into_iter().flatten() {
            if let Some(name) = file.1.as_str() {
                own.push(name.into());
            }
        }
    }
    let mut foreign: Vec<&String> = names.iter().filter(|n| !own.contains(n)).collect();
    if foreign.is_empty() {
        return Ok(None);
    }
    foreign.sort();
    let listed: Vec<&str> = foreign.iter().take(3).map(|s| s.as_str()).collect();
    let more = foreign.len().saturating_sub(3);
    Ok(Some(format!(
        "is an artifact that also holds files ftx did not write ({}{})",
        listed.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )))
}

/// The absolute path `target` names, through any links in its parent folders.
fn resolved(target: &Path) -> Result<PathBuf> {
    if let Ok(path) = target.canonicalize() {
        return Ok(path);
    }
    let absolute = std::path::absolute(target).map_err(|e| Error::io(target, e))?;
    // The nearest existing ancestor resolves links; the rest does not exist yet.
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while let Some(parent) = existing.parent() {
        if let Some(name) = existing.file_name() {
            rest.push(name.to_os_string());
        }
        existing = parent;
        if let Ok(base) = existing.canonicalize() {
            return Ok(rest.iter().rev().fold(base, |p, n| p.join(n)));
        }
    }
    Ok(absolute)
}

fn sibling(target: &Path, suffix: &str) -> (PathBuf, String) {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let path = parent.join(format!(".{name}{suffix}"));
    (path, format!(".{name}."))
}

/// An exclusive lock on `.NAME.lock` beside the target: a second writer fails at once, naming
/// the path, instead of one of two results being lost.
fn lock(target: &Path) -> Result<(File, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let (path, _) = sibling(target, ".lock");
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    loop {
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::Config(format!(
                "{} is a symbolic link; ftx does not write through links",
                path.display()
            )));
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Config(format!(
                    "--out {}: another ftx process is writing there (it holds {}); wait for it \
                     to finish, or choose another --out",
                    target.display(),
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // The holder before us removes the file as it finishes: a lock on a removed file
        // guards nothing, so take the one now at the path.
        let ours = file.metadata().map_err(|e| Error::io(&path, e))?;
        let at_path = std::fs::metadata(&path);
        if at_path.is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev()) {
            return Ok((file, path));
        }
    }
}

/// Removes the staging folders of writers that died: with the lock held, no one else writes.
fn remove_stale(target: &Path) {
    let (probe, prefix) = sibling(target, "");
    let Some(parent) = probe.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `.NAME.RANDOM.partial` exactly: RANDOM has no dot, so `.NAME.x.RANDOM.partial` of a
        // target `NAME.x` is not mistaken for one of `NAME`'s.
        let random = name.strip_prefix(&prefix).and_then(|r| {
            r.strip_suffix(".partial")
                .or_else(|| r.strip_suffix(".old"))
        });
        let stale = random.is_some_and(|r| !r.is_empty() && !r.contains('.'));
        if stale && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests;
