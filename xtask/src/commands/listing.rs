//! Listing: what `list-all-images`, `list-all-test-images`, `local-image` and
//! `settings` print.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::catalog::discovery::{discover_lenient, Catalog};
use crate::catalog::shard::{self, Shard};
use crate::catalog::tagging;
use crate::config::{Settings, VARIABLES};
use crate::git::history;
use crate::model::{ImageIndex, ImageRef};

#[derive(Debug, Serialize)]
pub struct ImageJson<'a> {
    pub name: &'a str,
    pub path: &'a str,
    pub dockerfile: &'a str,
    pub group: &'a str,
    pub arch: &'static str,
    pub tag: &'a str,
    pub local: String,
    pub remote: String,
    pub test: bool,
}

/// Prints every image (or every test image), or those of one shard, or
/// those changed since a git revision. A directory whose name cannot make
/// an image name is skipped with a warning.
pub fn list(
    settings: &Settings,
    tests_only: bool,
    json: bool,
    shard: Option<Shard>,
    changed_since: Option<&str>,
) -> Result<()> {
    let catalog = discover_lenient(&settings.images_dir, settings.arch)?;
    for bad in &catalog.invalid {
        eprintln!("warning: skipped: {}", bad.reason);
    }
    let mut chosen: Vec<ImageIndex> =
        catalog.indexed().filter(|(_, image)| !tests_only || image.is_test(settings)).map(|(i, _)| i).collect();
    if let Some(rev) = changed_since {
        chosen = history::changed_since(settings, &catalog, &chosen, rev)?;
    }
    if let Some(shard) = shard {
        chosen = shard::select(&catalog, settings, &chosen, shard)?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !json {
        for &i in &chosen {
            writeln!(out, "{}", catalog[i].name)?;
        }
        out.flush()?;
        return Ok(());
    }
    let tags = tagging::tags(&catalog, settings, &chosen)?;
    let rows: Vec<ImageJson> = chosen.iter().map(|&i| json_row(settings, &catalog, i, &tags[&i])).collect();
    crate::report::print_list("images", &rows)
}

pub fn json_row<'a>(settings: &Settings, catalog: &'a Catalog, i: ImageIndex, tag: &'a str) -> ImageJson<'a> {
    let image = &catalog[i];
    let names = ImageRef::new(settings, &image.path, tag);
    ImageJson {
        name: &image.name,
        path: &image.path,
        dockerfile: &image.dockerfile,
        group: image.group(),
        arch: settings.arch.as_str(),
        tag,
        local: names.local_tagged(),
        remote: names.remote_tagged(),
        test: image.is_test(settings),
    }
}

/// One field of an image, as `local-image --print` prints it: a key of the
/// `--json` rows, with the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Name,
    Path,
    Dockerfile,
    Group,
    Arch,
    Tag,
    Local,
    Remote,
    Test,
}

impl Field {
    const ALL: [(&'static str, Field); 9] = [
        ("name", Field::Name),
        ("path", Field::Path),
        ("dockerfile", Field::Dockerfile),
        ("group", Field::Group),
        ("arch", Field::Arch),
        ("tag", Field::Tag),
        ("local", Field::Local),
        ("remote", Field::Remote),
        ("test", Field::Test),
    ];

    /// Only these hash anything.
    fn needs_tag(self) -> bool {
        matches!(self, Field::Tag | Field::Local | Field::Remote)
    }

    fn of(self, row: &ImageJson) -> String {
        match self {
            Field::Name => row.name.to_string(),
            Field::Path => row.path.to_string(),
            Field::Dockerfile => row.dockerfile.to_string(),
            Field::Group => row.group.to_string(),
            Field::Arch => row.arch.to_string(),
            Field::Tag => row.tag.to_string(),
            Field::Local => row.local.clone(),
            Field::Remote => row.remote.clone(),
            Field::Test => row.test.to_string(),
        }
    }
}

impl FromStr for Field {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Field> {
        match Field::ALL.iter().find(|(name, _)| *name == s) {
            Some((_, field)) => Ok(*field),
            None => {
                let names: Vec<&str> = Field::ALL.iter().map(|(name, _)| *name).collect();
                bail!("unknown field `{s}`: use one of {}", names.join(", "))
            }
        }
    }
}

/// Prints one field of each selected image, one line each. Only the named
/// images are looked at: an invalid directory elsewhere in the tree does not
/// stop it.
pub fn local_image(settings: &Settings, names: &[String], field: Field) -> Result<()> {
    let catalog = discover_lenient(&settings.images_dir, settings.arch)?;
    let chosen = catalog.select(names)?;
    let tags = if field.needs_tag() { tagging::tags(&catalog, settings, &chosen)? } else { Default::default() };
    let mut out = std::io::stdout().lock();
    for i in chosen {
        let tag = tags.get(&i).map_or("", String::as_str);
        writeln!(out, "{}", field.of(&json_row(settings, &catalog, i, tag)))?;
    }
    Ok(())
}

/// A resolved setting as its variable would spell it (see
/// [`crate::config::Variable::value`]); `None` when no setting has that
/// variable.
pub fn setting(settings: &Settings, cwd: &Path, name: &str) -> Option<String> {
    let value = VARIABLES.iter().find(|v| v.name == name)?.value?;
    Some(value(settings, cwd))
}

/// Prints every setting as `NAME=value`, or the value of each one named.
pub fn print_settings(settings: &Settings, cwd: &Path, names: &[String]) -> Result<()> {
    let printed = VARIABLES.iter().filter_map(|v| Some((v.name, v.value?)));
    let lines: Vec<String> = if names.is_empty() {
        printed.map(|(name, value)| format!("{name}={}", value(settings, cwd))).collect()
    } else {
        let mut values = Vec::new();
        for name in names {
            match setting(settings, cwd, name) {
                Some(value) => values.push(value),
                None => {
                    let known: Vec<&str> = printed.clone().map(|(name, _)| name).collect();
                    bail!("unknown setting `{name}`: use one of {}", known.join(", "))
                }
            }
        }
        values
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
