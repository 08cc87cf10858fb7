//! What people read: each image's verdict, with the paths that differ
//! under the step that made their layer, a line per kind of difference
//! (file times on a line of their own), the config's differing fields, and
//! what rewriting file times would do; then the count.

use std::fmt::Write;

use super::command::Verified;
use crate::model::{escape, excerpt};

/// Width of the verdict column: `not reproducible` and two spaces.
const VERDICT: usize = 18;

/// One image's lines.
pub fn image_text(v: &Verified, max_paths: usize) -> String {
    let name = escape(&v.image.name);
    let checked = match &v.result {
        Ok(checked) => checked,
        Err(_) => return format!("{:<VERDICT$}{name}\n", "failed"),
    };
    let c = &checked.comparison;
    let verdict = if c.reproducible() { "reproducible" } else { "not reproducible" };
    let note = if checked.identical {
        " (the same image, to the byte)"
    } else if c.reproducible() && c.file_times_differ() {
        " (only file times differ)"
    } else {
        ""
    };
    let mut out = format!("{verdict:<VERDICT$}{name}{note}\n");
    if let Some((first, second)) = c.layer_counts {
        let _ = writeln!(out, "  layers: {first} in the first build, {second} in the second");
    }
    for field in &c.config {
        let _ =
            writeln!(out, "  config {}: {} → {}", excerpt(&field.field), excerpt(&field.first), excerpt(&field.second));
    }
    for layer in &c.layers {
        let _ = writeln!(out, "  layer {}: {}", layer.layer, escape(&layer.step));
        for (kind, paths) in &layer.paths {
            let _ = writeln!(out, "    {}: {}", kind.as_str(), listed(paths, max_paths));
        }
    }
    if let Some(rewrite) = &checked.rewrite {
        let _ = writeln!(out, "  rewrite-timestamp: {}", rewrite.note);
    }
    out
}

/// At most `max` of `paths`, and how many more there are.
fn listed(paths: &[String], max: usize) -> String {
    let shown: Vec<String> = paths.iter().take(max).map(|p| escape(p)).collect();
    match paths.len().saturating_sub(max) {
        0 => shown.join(", "),
        more => format!("{} … and {more} more", shown.join(", ")),
    }
}

/// `3 images: 2 reproducible, 1 not reproducible`; with those failed and
/// those not verified (a run stopped by a failure or an interrupt).
pub fn count_line(done: &[Verified], chosen: usize) -> String {
    let count = |want: Option<bool>| done.iter().filter(|v| v.reproducible() == want).count();
    let mut parts =
        vec![format!("{} reproducible", count(Some(true))), format!("{} not reproducible", count(Some(false)))];
    let failed = count(None);
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if chosen > done.len() {
        parts.push(format!("{} not verified", chosen - done.len()));
    }
    let plural = if chosen == 1 { "" } else { "s" };
    format!("{chosen} image{plural}: {}", parts.join(", "))
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::super::command::Checked;
    use super::super::compare::{Comparison, FieldDiff, Kind, LayerDiff};
    use super::super::timestamps::Rewrite;
    use super::*;
    use crate::git::{DateFrom, SourceDate};
    use crate::model::{Arch, ImageInfo};

    pub(in super::super) fn verified(
        name: &str,
        result: Result<(bool, Comparison, Option<Rewrite>), &str>,
    ) -> Verified {
        Verified {
            image: ImageInfo {
                name: name.into(),
                path: name.replace('_', "/"),
                arch: Arch::X86_64,
                tag: Some("0123456789abcdef".into()),
                local: Some(format!("l.example/{}:0123456789abcdef", name.replace('_', "/"))),
                remote: Some(format!("r.example/{}_x86_64:0123456789abcdef", name.replace('_', "/"))),
                test: true,
            },
            date: SourceDate { seconds: 7, from: DateFrom::LastChange, commit: Some("c0ffee".into()) },
            result: result
                .map(|(identical, comparison, rewrite)| Checked { identical, comparison, rewrite })
                .map_err(String::from),
        }
    }

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn verdicts_with_what_differs() {
        let stamp = Comparison {
            config: vec![FieldDiff {
                field: "config.Env[0]".into(),
                first: "\"A=1\"".into(),
                second: "\"A=2\"".into(),
            }],
            layer_counts: None,
            layers: vec![LayerDiff {
                layer: 2,
                step: "RUN date +%s%N > /stamp".into(),
                paths: BTreeMap::from([
                    (Kind::Content, paths(&["/stamp"])),
                    (Kind::Mtime, paths(&["/a", "/b", "/c", "/d\u{1b}", "/e", "/f", "/g"])),
                ]),
            }],
        };
        assert_eq!(
            image_text(&verified("basic_stamp", Ok((false, stamp, None))), 5),
            "not reproducible  basic_stamp\n\
             \x20 config config.Env[0]: \"A=1\" → \"A=2\"\n\
             \x20 layer 2: RUN date +%s%N > /stamp\n\
             \x20   content: /stamp\n\
             \x20   mtime: /a, /b, /c, /d\\u{1b}, /e … and 2 more\n"
        );
        let times = Comparison {
            layers: vec![LayerDiff {
                layer: 1,
                step: "RUN touch /t".into(),
                paths: BTreeMap::from([(Kind::Mtime, paths(&["/t"]))]),
            }],
            ..Comparison::default()
        };
        let rewrite = Rewrite { would_fix: true, builder_can: Some(false), note: "it would".into() };
        assert_eq!(
            image_text(&verified("a", Ok((false, times, Some(rewrite)))), 1),
            "reproducible      a (only file times differ)\n  layer 1: RUN touch /t\n    mtime: /t\n  rewrite-timestamp: it would\n"
        );
        assert_eq!(
            image_text(&verified("a", Ok((true, Comparison::default(), None))), 5),
            "reproducible      a (the same image, to the byte)\n"
        );
        assert_eq!(image_text(&verified("b", Err("build failed")), 5), "failed            b\n");
    }

    #[test]
    fn the_count() {
        let done = [verified("a", Ok((true, Comparison::default(), None))), verified("b", Err("build failed"))];
        assert_eq!(count_line(&done, 3), "3 images: 1 reproducible, 0 not reproducible, 1 failed, 1 not verified");
        assert_eq!(count_line(&done[..1], 1), "1 image: 1 reproducible, 0 not reproducible");
    }
}
