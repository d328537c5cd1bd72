//! Finding bundles on removable media (read-only, possibly vfat/exFAT).
//!
//! Invariant: listing never writes to the medium, never follows a symlink, skips hidden files
//! and AppleDouble `._*` companions, and stops at a depth and a count limit.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bounds on a medium walk.
#[derive(Debug, Clone, Copy)]
pub struct MediaLimits {
    /// Directory levels below the mount point that are searched.
    pub max_depth: usize,
    /// Directory entries examined in total.
    pub max_entries: usize,
}

impl Default for MediaLimits {
    fn default() -> Self {
        MediaLimits {
            max_depth: 4,
            max_entries: 10_000,
        }
    }
}

/// A bundle file found on a medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaBundle {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaListing {
    /// Bundles, sorted by path.
    pub bundles: Vec<MediaBundle>,
    /// Whether a limit stopped the walk early.
    pub truncated: bool,
}

/// Lists `*.airlock` files (any letter case, as vfat may upper-case names) under `root`.
pub fn list_bundles(root: &Path, limits: MediaLimits) -> Result<MediaListing> {
    let mut out = MediaListing::default();
    let mut examined = 0usize;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if dir == root => {
                return Err(Error::io(format!("cannot read {}", root.display()))(e))
            }
            Err(_) => continue,
        };
        for e in entries {
            let Ok(e) = e else { continue };
            examined += 1;
            if examined > limits.max_entries {
                out.truncated = true;
                stack.clear();
                break;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Hidden files, AppleDouble `._x` companions, and macOS/Windows clutter.
            if name.starts_with('.') || name == "System Volume Information" {
                continue;
            }
            // `file_type` does not follow symlinks: a link is neither a dir nor a file here.
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if depth < limits.max_depth {
                    stack.push((e.path(), depth + 1));
                } else {
                    out.truncated = true;
                }
            } else if ft.is_file() && name.to_ascii_lowercase().ends_with(".airlock") {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.bundles.push(MediaBundle {
                    path: e.path(),
                    size,
                });
            }
        }
    }
    out.bundles.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
