//! Listing: what `list-all-images`, `list-all-test-images` and `local-image` print.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::config::Settings;
use crate::discovery::{discover, Catalog, Image};
use crate::tagging;

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

pub fn is_test(settings: &Settings, image: &Image) -> bool {
    !settings.non_test.iter().any(|p| image.name.contains(p.as_str()) || image.path.contains(p.as_str()))
}

pub fn local_name(settings: &Settings, image: &Image) -> String {
    format!("{}/{}", settings.local_prefix, image.path)
}

pub fn remote_name(settings: &Settings, image: &Image) -> String {
    format!("{}/{}_{}", settings.remote_prefix, image.path, settings.arch)
}

pub fn list(settings: &Settings, tests_only: bool, json: bool) -> Result<()> {
    let catalog = discover(&settings.images_dir, settings.arch)?;
    let chosen: Vec<usize> =
        (0..catalog.images.len()).filter(|&i| !tests_only || is_test(settings, &catalog.images[i])).collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !json {
        for &i in &chosen {
            writeln!(out, "{}", catalog.images[i].name)?;
        }
        out.flush()?;
        return Ok(());
    }
    let tags = tagging::tags(&catalog, settings, &chosen)?;
    let rows: Vec<ImageJson> = chosen.iter().map(|&i| json_row(settings, &catalog, i, &tags[&i])).collect();
    serde_json::to_writer_pretty(&mut out, &rows)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

pub fn json_row<'a>(settings: &Settings, catalog: &'a Catalog, i: usize, tag: &'a str) -> ImageJson<'a> {
    let image = &catalog.images[i];
    ImageJson {
        name: &image.name,
        path: &image.path,
        dockerfile: &image.dockerfile,
        group: image.group(),
        arch: settings.arch.as_str(),
        tag,
        local: format!("{}:{tag}", local_name(settings, image)),
        remote: format!("{}:{tag}", remote_name(settings, image)),
        test: is_test(settings, image),
    }
}

pub fn local_image(settings: &Settings, names: &[String]) -> Result<()> {
    let catalog = discover(&settings.images_dir, settings.arch)?;
    let chosen = catalog.select(names)?;
    let tags = tagging::tags(&catalog, settings, &chosen)?;
    let mut out = std::io::stdout().lock();
    for i in chosen {
        writeln!(out, "{}:{}", local_name(settings, &catalog.images[i]), tags[&i])?;
    }
    Ok(())
}
