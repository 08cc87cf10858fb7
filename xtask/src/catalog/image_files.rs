//! An image's own files on disk, its Dockerfiles and `.dockerignore`, read
//! as files of the repository and as nothing else: each is a regular file
//! in the image directory (or a symlink to one there), no larger than
//! [`MAX_BYTES`]. A link to `/proc/self/environ` or `/dev/zero`, a pipe, or
//! a file grown without bound is an error naming it, never text shown or
//! memory spent.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::model::escape;

/// The most an image's Dockerfile or `.dockerignore` may hold: 1 MiB.
pub const MAX_BYTES: u64 = 1 << 20;

/// The file `name` of the image directory `dir`; `None` when there is none
/// (nor anything a symlink of that name leads to).
pub fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    let shown = || escape(&path.display().to_string());
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", shown())),
    };
    let target = if meta.file_type().is_symlink() {
        let target = match std::fs::canonicalize(&path) {
            Ok(target) => target,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", shown())),
        };
        let inside = std::fs::canonicalize(dir).is_ok_and(|dir| target.starts_with(dir));
        if !inside {
            let link = std::fs::read_link(&path).unwrap_or(target);
            return Err(outside(&path.display().to_string(), &link.display().to_string(), name));
        }
        target
    } else {
        path.clone()
    };
    // Not blocking on a pipe, nor following a link swapped in since.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&target)
        .with_context(|| format!("cannot read {}", shown()))?;
    let meta = file.metadata().with_context(|| format!("cannot read {}", shown()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file: an image's {name} must be one", shown());
    }
    let mut bytes = Vec::new();
    File::take(file, MAX_BYTES + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", shown()))?;
    within_limit(&bytes, &shown())?;
    Ok(Some(bytes))
}

/// The error for an image's file `name`, at `path`, that is a symlink to
/// `target`, which leads out of the image directory: the same whichever
/// way the file was read (on disk, or from git's objects).
pub fn outside(path: &str, target: &str, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is a symlink to {}, outside its image directory: an image's {name} must be a file in it; put the file \
         there instead",
        escape(path),
        escape(target)
    )
}

/// An error when `bytes`, the content of an image's file `shown`, are more
/// than [`MAX_BYTES`]: the same limit whichever way the file was read.
pub fn within_limit(bytes: &[u8], shown: &str) -> Result<()> {
    if bytes.len() as u64 > MAX_BYTES {
        bail!(
            "{shown} is larger than 1 MiB, the most an image's Dockerfile or .dockerignore may hold: make it smaller"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn regular_files_in_the_image_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("image");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("Dockerfile.real"), "FROM scratch\n").unwrap();
        std::fs::write(tmp.path().join("outside"), "secret\n").unwrap();
        symlink("Dockerfile.real", dir.join("Dockerfile")).unwrap();
        symlink("../image/sub/../Dockerfile.real", dir.join("roundabout")).unwrap();
        symlink("../outside", dir.join("out")).unwrap();
        symlink("/dev/zero", dir.join("zero")).unwrap();
        symlink("nowhere", dir.join("dangling")).unwrap();
        symlink("sub", dir.join("subdir")).unwrap();
        let text = |name: &str| read(&dir, name).map(|b| b.map(|b| String::from_utf8(b).unwrap()));
        assert_eq!(text("Dockerfile").unwrap().as_deref(), Some("FROM scratch\n"));
        assert_eq!(text("roundabout").unwrap().as_deref(), Some("FROM scratch\n"));
        assert_eq!(text("absent").unwrap(), None);
        assert_eq!(text("dangling").unwrap(), None);
        let shown = dir.display();
        assert_eq!(
            text("out").unwrap_err().to_string(),
            format!(
                "{shown}/out is a symlink to ../outside, outside its image directory: an image's out must be a file \
                 in it; put the file there instead"
            )
        );
        assert!(text("zero").unwrap_err().to_string().starts_with(&format!("{shown}/zero is a symlink to /dev/zero")));
        assert_eq!(
            text("subdir").unwrap_err().to_string(),
            format!("{shown}/subdir is not a regular file: an image's subdir must be one")
        );
        assert_eq!(
            text("sub").unwrap_err().to_string(),
            format!("{shown}/sub is not a regular file: an image's sub must be one")
        );
    }

    #[test]
    fn pipes_are_refused_without_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("Dockerfile");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read(tmp.path(), "Dockerfile").unwrap_err().to_string(),
            format!("{} is not a regular file: an image's Dockerfile must be one", fifo.display())
        );
    }

    #[test]
    fn size_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("Dockerfile"), vec![b'#'; MAX_BYTES as usize]).unwrap();
        assert_eq!(read(tmp.path(), "Dockerfile").unwrap().unwrap().len() as u64, MAX_BYTES);
        std::fs::write(tmp.path().join("Dockerfile"), vec![b'#'; MAX_BYTES as usize + 1]).unwrap();
        assert_eq!(
            read(tmp.path(), "Dockerfile").unwrap_err().to_string(),
            format!(
                "{}/Dockerfile is larger than 1 MiB, the most an image's Dockerfile or .dockerignore may hold: make \
                 it smaller",
                tmp.path().display()
            )
        );
    }
}
