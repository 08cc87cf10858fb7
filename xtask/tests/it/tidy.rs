//! Repository rules that read this workspace's own files outside the crate:
//! the README places every folder of the sources, and the Makefile shim
//! forwards every settings variable. Here, not among the unit tests: those
//! travel with the sources into the projects that adopt the tool (the
//! README's migration), which have neither file.

use std::collections::BTreeSet;
use std::path::Path;

use xtask::config::VARIABLES;

#[test]
fn the_readme_places_every_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).expect("the README can be read");
    let section = readme.split("## Where the code lives").nth(1).expect("the README has \"Where the code lives\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("src")).expect("the source tree can be read") {
        let entry = entry.expect("the source tree can be read");
        let name = entry.file_name().to_string_lossy().into_owned();
        let shown = if entry.path().is_dir() { format!("`{name}/`") } else { format!("`{name}`") };
        if !section.contains(&shown) {
            missing.push(shown);
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "README's \"Where the code lives\" does not name {}", missing.join(", "));
}

/// The workspace's Makefile forwards to the tool the variables of
/// [`VARIABLES`], no more and no fewer, and its help names them all.
#[test]
fn the_makefile_forwards_every_variable() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Makefile");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.replace("\\\n", " ");
    let exported = lines.lines().find_map(|l| l.strip_prefix("_xtask_vars :=")).expect("_xtask_vars is set");
    let mut forwarded: BTreeSet<&str> = exported.split_whitespace().collect();
    // The prefixes are exported only when given.
    forwarded.extend(lines.lines().filter_map(|l| l.strip_prefix("$(eval $(call _xtask_prefix,")?.strip_suffix("))")));
    let table: BTreeSet<&str> = VARIABLES.iter().map(|v| v.name).collect();
    assert_eq!(forwarded, table, "the variables {} forwards", path.display());

    let help = text.split("\nVariables (").nth(1).and_then(|h| h.split("\n\n").next()).expect("help on variables");
    let mut named: BTreeSet<&str> =
        help.split(|c: char| !(c.is_ascii_uppercase() || c == '_')).filter(|w| w.len() > 1).collect();
    assert!(named.remove("XTASK_FLAGS"), "{help}");
    assert_eq!(named, table, "the variables {}'s help names", path.display());
}
