//! The walk of a volume into a [`Manifest`]: the I/O edge of the verification.
//!
//! - Every path under the root, and the root itself as `.` (rsync's `/data/` copies the
//!   root directory's mode and owner too, so they are checked as well).
//! - `lstat`, never following a symlink; files are opened with `O_NOFOLLOW`.
//! - Hard links: the second and later paths (in sorted order) of one (device, inode)
//!   name the first; the content of an inode is hashed once.
//! - Extended attributes through `llistxattr`/`lgetxattr`. The POSIX ACLs
//!   (`system.posix_acl_access`, `system.posix_acl_default`) go into `acl_sha256`, every
//!   other attribute into `xattrs_sha256`, except `security.selinux`: the node labels each
//!   mount itself (the kubelet's relabelling, a `context=` mount option), so the label
//!   says where the volume is mounted, not what it holds.
//! - Anything that cannot be read (a directory, a file, an attribute) is an error that
//!   names the path, never skipped: a skipped directory would verify an empty copy.

use std::{
    collections::HashMap,
    ffi::CString,
    fs::{self, File},
    io::Read,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::volume_move::manifest::{Entry, FileType, Manifest, escape};

const ACL_ATTRIBUTES: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];
const NODE_ATTRIBUTES: [&[u8]; 1] = [b"security.selinux"];

/// Walks `root` into its manifest.
pub fn manifest(root: &Path) -> Result<Manifest, String> {
    let mut found: Vec<(Vec<u8>, PathBuf, fs::Metadata)> = Vec::new();
    let meta = fs::symlink_metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a directory", root.display()));
    }
    found.push((b".".to_vec(), root.to_path_buf(), meta));
    let mut pending: Vec<(Vec<u8>, PathBuf)> = vec![(Vec::new(), root.to_path_buf())];
    while let Some((relative, dir)) = pending.pop() {
        let shown = |relative: &[u8]| {
            if relative.is_empty() {
                ".".to_string()
            } else {
                escape(relative)
            }
        };
        let entries = fs::read_dir(&dir)
            .map_err(|e| format!("cannot read directory {}: {e}", shown(&relative)))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("cannot read directory {}: {e}", shown(&relative)))?;
            let mut path = relative.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(entry.file_name().as_bytes());
            let full = entry.path();
            let meta = fs::symlink_metadata(&full)
                .map_err(|e| format!("cannot stat {}: {e}", escape(&path)))?;
            if meta.is_dir() {
                pending.push((path.clone(), full.clone()));
            }
            found.push((path, full, meta));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));

    let mut first_path: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut digests: HashMap<(u64, u64), [u8; 32]> = HashMap::new();
    let mut entries = Vec::with_capacity(found.len());
    for (path, full, meta) in found {
        let shown = escape(&path);
        let kind = meta.file_type();
        let file_type = if kind.is_file() {
            FileType::Regular
        } else if kind.is_dir() {
            FileType::Directory
        } else if kind.is_symlink() {
            FileType::Symlink
        } else if kind.is_fifo() {
            FileType::Fifo
        } else if kind.is_socket() {
            FileType::Socket
        } else if kind.is_char_device() {
            FileType::CharDevice(libc::major(meta.rdev()), libc::minor(meta.rdev()))
        } else if kind.is_block_device() {
            FileType::BlockDevice(libc::major(meta.rdev()), libc::minor(meta.rdev()))
        } else {
            return Err(format!("{shown}: a file of unknown type"));
        };
        let inode = (meta.dev(), meta.ino());
        let hard_link_to = if file_type != FileType::Directory && meta.nlink() > 1 {
            match first_path.get(&inode) {
                Some(first) => Some(first.clone()),
                None => {
                    first_path.insert(inode, path.clone());
                    None
                }
            }
        } else {
            None
        };
        let sha256 = if file_type == FileType::Regular {
            Some(match digests.get(&inode) {
                Some(digest) => *digest,
                None => {
                    let digest =
                        content_digest(&full).map_err(|e| format!("cannot read {shown}: {e}"))?;
                    digests.insert(inode, digest);
                    digest
                }
            })
        } else {
            None
        };
        let link_target = if file_type == FileType::Symlink {
            Some(
                fs::read_link(&full)
                    .map_err(|e| format!("cannot read symlink {shown}: {e}"))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else {
            None
        };
        let (xattrs_sha256, acl_sha256) = attribute_digests(&full)
            .map_err(|e| format!("cannot read the extended attributes of {shown}: {e}"))?;
        entries.push(Entry {
            path,
            file_type,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: if file_type == FileType::Regular {
                meta.size()
            } else {
                0
            },
            sha256,
            link_target,
            hard_link_to,
            xattrs_sha256,
            acl_sha256,
        });
    }
    Manifest::new(entries).map_err(|e| format!("the walk gave a malformed manifest: {e}"))
}

fn content_digest(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().into())
}

/// The digests of the extended attributes and of the ACLs, each over the sorted names
/// with their values (length-prefixed, so that no two sets hash alike), `None` when
/// there are none.
#[allow(clippy::type_complexity)]
fn attribute_digests(path: &Path) -> std::io::Result<(Option<[u8; 32]>, Option<[u8; 32]>)> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    let mut names = list_attributes(&c_path)?;
    names.sort();
    let (mut xattrs, mut acls) = (Vec::new(), Vec::new());
    for name in names {
        if NODE_ATTRIBUTES.contains(&name.as_slice()) {
            continue;
        }
        let Some(value) = attribute(&c_path, &name)? else {
            continue; // removed since it was listed
        };
        let into = if ACL_ATTRIBUTES.contains(&name.as_slice()) {
            &mut acls
        } else {
            &mut xattrs
        };
        into.push((name, value));
    }
    let digest = |pairs: Vec<(Vec<u8>, Vec<u8>)>| {
        (!pairs.is_empty()).then(|| {
            let mut hasher = Sha256::new();
            for (name, value) in pairs {
                hasher.update((name.len() as u64).to_be_bytes());
                hasher.update(&name);
                hasher.update((value.len() as u64).to_be_bytes());
                hasher.update(&value);
            }
            hasher.finalize().into()
        })
    };
    Ok((digest(xattrs), digest(acls)))
}

fn list_attributes(path: &CString) -> std::io::Result<Vec<Vec<u8>>> {
    loop {
        // SAFETY: a NUL-terminated path and a null buffer of size 0 ask for the size.
        let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(error),
            };
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buffer = vec![0u8; size as usize];
        // SAFETY: the buffer is valid for `buffer.len()` bytes.
        let got =
            unsafe { libc::llistxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(error);
        }
        buffer.truncate(got as usize);
        return Ok(buffer
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

fn attribute(path: &CString, name: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let c_name = CString::new(name).map_err(|_| std::io::Error::other("NUL in a name"))?;
    loop {
        // SAFETY: NUL-terminated path and name; a null buffer of size 0 asks for the size.
        let size =
            unsafe { libc::lgetxattr(path.as_ptr(), c_name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(error),
            };
        }
        let mut buffer = vec![0u8; size as usize];
        // SAFETY: the buffer is valid for `buffer.len()` bytes.
        let got = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                c_name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ERANGE) => continue,
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(error),
            }
        }
        buffer.truncate(got as usize);
        return Ok(Some(buffer));
    }
}
