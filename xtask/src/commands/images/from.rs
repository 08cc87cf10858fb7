//! What a build starts from: the image its Dockerfile's last stage is built
//! `FROM`, followed through the stages it names. Its layers are in the
//! built image, but the build did not make them.

use crate::catalog::dockerfile;
use crate::planning::FromImage;

/// The image the last stage of `text` starts from, with `build_args`
/// (`DOCKER_BUILD_ARGS`) over the global `ARG`s' defaults.
pub fn from_image(text: &str, build_args: &[String]) -> FromImage {
    let file = dockerfile::parse(text);
    let Ok(references) = dockerfile::from_references(&file, &dockerfile::build_args(build_args)) else {
        return FromImage::Unknown;
    };
    let froms: Vec<&dockerfile::Instruction> = file.instructions.iter().filter(|i| i.keyword == "FROM").collect();
    // A reference left to a variable with no value is left out of them.
    if references.len() != froms.len() || froms.is_empty() {
        return FromImage::Unknown;
    }
    // Each stage: what it is built FROM, and its name (`AS name`), which
    // BuildKit matches in any case.
    let stages: Vec<(String, Option<String>)> = froms
        .iter()
        .zip(references)
        .map(|(from, reference)| {
            let name = match dockerfile::words(from.args(), file.escape).as_slice() {
                [_, as_, name, ..] if as_.text.eq_ignore_ascii_case("as") => Some(name.text.to_lowercase()),
                _ => None,
            };
            (reference, name)
        })
        .collect();
    let mut last = stages.len() - 1;
    // A stage built FROM an earlier one starts where that one does.
    while let Some(earlier) =
        stages[..last].iter().rposition(|(_, name)| name.as_deref() == Some(&stages[last].0.to_lowercase()))
    {
        last = earlier;
    }
    match &stages[last].0 {
        scratch if scratch.eq_ignore_ascii_case("scratch") => FromImage::Scratch,
        reference => FromImage::Image(reference.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(r: &str) -> FromImage {
        FromImage::Image(r.into())
    }

    #[test]
    fn the_last_stage_through_the_stages_it_names() {
        let cases: &[(&str, FromImage)] = &[
            ("FROM scratch\nCOPY f /\n", FromImage::Scratch),
            ("FROM busybox:1.36\nRUN true\n", image("busybox:1.36")),
            ("FROM --platform=linux/amd64 l/base:latest\n", image("l/base:latest")),
            ("FROM golang AS build\nRUN go build\nFROM alpine\nCOPY --from=build /x /\n", image("alpine")),
            ("FROM debian AS Base\nRUN true\nFROM base AS two\nRUN true\nFROM two\n", image("debian")),
            ("FROM golang AS build\nFROM scratch\nCOPY --from=build /x /\n", FromImage::Scratch),
            ("ARG V=3.19\nFROM alpine:${V}\n", image("alpine:3.19")),
            ("FROM alpine:${NOPE}\n", FromImage::Unknown),
            ("# no FROM\n", FromImage::Unknown),
        ];
        for (text, expected) in cases {
            assert_eq!(&from_image(text, &[]), expected, "{text}");
        }
        assert_eq!(
            from_image("ARG V=3.19\nFROM alpine:$V\n", &["--build-arg".into(), "V=3.20".into()]),
            image("alpine:3.20")
        );
    }
}
