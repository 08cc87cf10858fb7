//! `verify --json`: `{"schema": 1, "arch", "builder", "images": [image +
//! "reproducible", "identical", "source_date", "config", "layer_counts"?,
//! "layers", "rewrite_timestamp"?, "error"?]}`, the paths of each kind of
//! difference cut as the text cuts them, with the count of the rest.

use serde::Serialize;

use super::command::Verified;
use super::compare::{FieldDiff, Kind};
use super::timestamps::Rewrite;
use crate::git::SourceDate;
use crate::model::{Arch, ImageInfo};

#[derive(Serialize)]
pub struct Document<'a> {
    pub arch: Arch,
    /// What built the images: `classic`, `buildkit` or `podman`.
    pub builder: &'static str,
    pub images: Vec<ImageEntry<'a>>,
}

#[derive(Serialize)]
pub struct ImageEntry<'a> {
    #[serde(flatten)]
    pub image: &'a ImageInfo,
    /// `null` when the image could not be verified (see `error`).
    pub reproducible: Option<bool>,
    /// Whether both builds made one image, to the byte.
    pub identical: Option<bool>,
    /// `SOURCE_DATE_EPOCH` of both builds, and where it comes from.
    pub source_date: &'a SourceDate,
    pub config: &'a [FieldDiff],
    /// Each build's number of layers, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_counts: Option<[usize; 2]>,
    pub layers: Vec<LayerEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite_timestamp: Option<&'a Rewrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
pub struct LayerEntry<'a> {
    pub layer: usize,
    pub step: &'a str,
    pub differences: Vec<Difference<'a>>,
}

#[derive(Serialize)]
pub struct Difference<'a> {
    pub kind: Kind,
    /// The first of the paths, sorted.
    pub paths: &'a [String],
    /// How many more there are.
    pub more: usize,
}

impl<'a> Document<'a> {
    pub fn new(arch: Arch, builder: &'static str, done: &'a [Verified], max_paths: usize) -> Document<'a> {
        let images = done
            .iter()
            .map(|v| {
                let checked = v.result.as_ref().ok();
                let layers = checked.map_or(&[][..], |c| &c.comparison.layers[..]);
                ImageEntry {
                    image: &v.image,
                    reproducible: v.reproducible(),
                    identical: checked.map(|c| c.identical),
                    source_date: &v.date,
                    config: checked.map_or(&[][..], |c| &c.comparison.config),
                    layer_counts: checked.and_then(|c| c.comparison.layer_counts).map(|(a, b)| [a, b]),
                    layers: layers
                        .iter()
                        .map(|l| LayerEntry {
                            layer: l.layer,
                            step: &l.step,
                            differences: l
                                .paths
                                .iter()
                                .map(|(kind, paths)| Difference {
                                    kind: *kind,
                                    paths: &paths[..paths.len().min(max_paths)],
                                    more: paths.len().saturating_sub(max_paths),
                                })
                                .collect(),
                        })
                        .collect(),
                    rewrite_timestamp: checked.and_then(|c| c.rewrite.as_ref()),
                    error: v.result.as_ref().err().map(String::as_str),
                }
            })
            .collect();
        Document { arch, builder, images }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::super::compare::{Comparison, LayerDiff};
    use super::super::text::tests::verified;
    use super::*;

    #[test]
    fn the_document() {
        let stamp = Comparison {
            layers: vec![LayerDiff {
                layer: 2,
                step: "RUN date > /stamp".into(),
                paths: BTreeMap::from([
                    (Kind::Content, vec!["/stamp".to_string()]),
                    (Kind::Mtime, vec!["/etc".to_string(), "/stamp".to_string()]),
                ]),
            }],
            ..Comparison::default()
        };
        let done = [verified("basic_stamp", Ok((false, stamp, None))), verified("basic_bad", Err("build failed"))];
        let value = serde_json::to_value(Document::new(Arch::X86_64, "classic", &done, 1)).unwrap();
        let image = |name: &str| {
            let path = name.replace('_', "/");
            json!({
                "name": name, "path": path, "arch": "x86_64", "tag": "0123456789abcdef",
                "local": format!("l.example/{path}:0123456789abcdef"),
                "remote": format!("r.example/{path}_x86_64:0123456789abcdef"), "test": true,
                "source_date": { "seconds": 7, "from": "last-change", "commit": "c0ffee" },
            })
        };
        let mut stamp = image("basic_stamp");
        let fields = json!({
            "reproducible": false, "identical": false, "config": [],
            "layers": [{ "layer": 2, "step": "RUN date > /stamp", "differences": [
                { "kind": "content", "paths": ["/stamp"], "more": 0 },
                { "kind": "mtime", "paths": ["/etc"], "more": 1 },
            ]}],
        });
        stamp.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let mut bad = image("basic_bad");
        let fields =
            json!({ "reproducible": null, "identical": null, "config": [], "layers": [], "error": "build failed" });
        bad.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        assert_eq!(value, json!({ "arch": "x86_64", "builder": "classic", "images": [stamp, bad] }));
    }
}
