//! Writing a changed Dockerfile: the new file replaces the old one whole
//! or not at all.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A new version of a file, written beside it and not yet in its place;
/// dropped, it is removed.
pub struct Staged {
    path: PathBuf,
    temp: Option<PathBuf>,
}

/// Writes `contents` to a new file beside `path`, with its permissions.
pub fn stage(path: &Path, contents: &[u8]) -> Result<Staged> {
    let name = path.file_name().with_context(|| format!("{} is not a file", path.display()))?;
    let temp = path.with_file_name(format!(".{}.pin-{}", name.to_string_lossy(), std::process::id()));
    let staged = Staged { path: path.to_path_buf(), temp: Some(temp.clone()) };
    let permissions = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.permissions();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .with_context(|| format!("cannot create {} beside {}", temp.display(), path.display()))?;
    let written =
        file.write_all(contents).and_then(|()| file.set_permissions(permissions)).and_then(|()| file.sync_all());
    written.with_context(|| format!("cannot write {}", temp.display()))?;
    Ok(staged)
}

impl Staged {
    /// Puts the new version in the file's place.
    pub fn commit(mut self) -> Result<()> {
        let temp = self.temp.take().expect("a staged file is committed once");
        fs::rename(&temp, &self.path).with_context(|| format!("cannot replace {}", self.path.display())).inspect_err(
            |_| {
                let _ = fs::remove_file(&temp);
            },
        )
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_replace_whole_or_not_at_all() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-pin-stage-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Dockerfile");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        drop(stage(&path, b"dropped\n").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\n");
        stage(&path, b"new\n").unwrap().commit().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["Dockerfile"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
