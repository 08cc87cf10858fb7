//! `Dockerfile.<suffix>` files whose suffix spells an architecture:
//! discovery never builds from them.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use super::rules::{Diagnostic, ARCH_SUFFIX};
use crate::catalog::discovery::walk_error;
use crate::model::Arch;

/// Architecture spellings a `Dockerfile.<suffix>` may hold by mistake, with
/// the tool's own name for the architecture where it has one.
const ARCH_SPELLINGS: [(&str, Option<&str>); 29] = [
    ("x86_64", Some("x86_64")),
    ("amd64", Some("x86_64")),
    ("x86-64", Some("x86_64")),
    ("x64", Some("x86_64")),
    ("aarch64", Some("aarch64")),
    ("arm64", Some("aarch64")),
    ("arm64v8", Some("aarch64")),
    ("armv8", Some("aarch64")),
    ("arm", None),
    ("armhf", None),
    ("armel", None),
    ("armv6", None),
    ("armv7", None),
    ("arm32v6", None),
    ("arm32v7", None),
    ("i386", None),
    ("i686", None),
    ("386", None),
    ("x86", None),
    ("ppc64le", None),
    ("ppc64", None),
    ("s390x", None),
    ("riscv64", None),
    ("mips", None),
    ("mipsle", None),
    ("mips64", None),
    ("mips64le", None),
    ("loong64", None),
    ("loongarch64", None),
];

/// `Dockerfile.<suffix>` files whose suffix spells an architecture the tool
/// does not know by that name: discovery never uses them.
pub(super) fn arch_suffixes(root: &Path, selected: Option<&HashSet<String>>) -> Result<Vec<Diagnostic>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).min_depth(2).sort_by_file_name() {
        let entry = entry.map_err(walk_error)?;
        let Some(suffix) = entry.file_name().to_str().and_then(|n| n.strip_prefix("Dockerfile.")) else { continue };
        if entry.file_type().is_dir() || Arch::ALL.iter().any(|a| a.as_str() == suffix) {
            continue;
        }
        let Some((_, canonical)) = ARCH_SPELLINGS.iter().find(|(s, _)| s.eq_ignore_ascii_case(suffix)) else {
            continue;
        };
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let dir = rel.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
        if selected.is_some_and(|s| !s.contains(&dir)) {
            continue;
        }
        let message = match canonical {
            Some(arch) => format!(
                "Dockerfile.{suffix} is never used: the tool calls this architecture {arch}; rename it Dockerfile.{arch}"
            ),
            None => format!(
                "Dockerfile.{suffix} is never used: {suffix} is not an architecture the tool builds for (x86_64, aarch64)"
            ),
        };
        out.push(Diagnostic::new(&rel.to_string_lossy(), None, ARCH_SUFFIX, message));
    }
    Ok(out)
}
