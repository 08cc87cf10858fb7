//! Settings: the committed `images.toml`, overridden by environment variables
//! and flags, resolved once into a [`Settings`] value the rest of the tool
//! reads; and the one table of those variables, [`VARIABLES`].

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::model::Arch;

/// How tags are computed; see the README's "How tags are made".
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TagScheme {
    Content,
    Gvisor,
}

impl TagScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            TagScheme::Content => "content",
            TagScheme::Gvisor => "gvisor",
        }
    }
}

impl FromStr for TagScheme {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<TagScheme> {
        <TagScheme as clap::ValueEnum>::from_str(s, false)
            .map_err(|_| anyhow::anyhow!("unknown tag scheme `{s}`: use content or gvisor"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    Docker,
    Podman,
}

impl EngineKind {
    pub fn program(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Podman => "podman",
        }
    }
}

impl FromStr for EngineKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<EngineKind> {
        <EngineKind as clap::ValueEnum>::from_str(s, false)
            .map_err(|_| anyhow::anyhow!("unknown engine `{s}`: use docker or podman"))
    }
}

/// The committed defaults file, `xtask/images.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub images_dir: Option<String>,
    pub remote_image_prefix: Option<String>,
    pub local_image_prefix: Option<String>,
    pub tag_scheme: Option<String>,
    pub non_test_images: Option<Vec<String>>,
    pub engine: Option<String>,
    pub insecure_registries: Option<Vec<String>>,
    pub cache_from: Option<bool>,
    pub source: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the settings file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid settings file {}", path.display()))
    }
}

/// What the user asked for on the command line or in the environment; each
/// `None` falls back to the settings file, then to the built-in default.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Settings")]
pub struct Overrides {
    /// Directory holding the image directories [default: images]
    #[arg(long, env = "IMAGES_DIR", global = true, value_name = "DIR")]
    pub images_dir: Option<PathBuf>,
    /// Architecture to build for: x86_64 (or amd64) or aarch64 (or arm64) [default: the host's]
    #[arg(long, env = "ARCH", global = true, value_parser = Arch::parser())]
    pub arch: Option<Arch>,
    /// Registry repository prefix for the shared cache: <prefix>/<path>_<arch>:<tag>
    #[arg(long, env = "REMOTE_IMAGE_PREFIX", global = true, value_name = "PREFIX")]
    pub remote_image_prefix: Option<String>,
    /// Prefix of the local names tests use: <prefix>/<path>:<tag> and :latest
    #[arg(long, env = "LOCAL_IMAGE_PREFIX", global = true, value_name = "PREFIX")]
    pub local_image_prefix: Option<String>,
    /// How tags are computed: content, or gvisor (the legacy Makefile's tags)
    #[arg(long, env = "TAG_SCHEME", global = true, value_name = "SCHEME")]
    pub tag_scheme: Option<TagScheme>,
    /// Images that are not test images, as `a|b` (or the legacy `a\|b`): an entry matches when it occurs in the image's name or path
    #[arg(long, env = "NON_TEST_IMAGES", global = true, value_name = "LIST")]
    pub non_test_images: Option<String>,
    /// Extra arguments for every build, split into words as a shell would (e.g. "--build-arg MSG='hello world'")
    #[arg(long, env = "DOCKER_BUILD_ARGS", global = true, value_name = "ARGS", allow_hyphen_values = true)]
    pub build_args: Option<String>,
    /// Container engine: docker or podman
    #[arg(long, env = "IMAGES_ENGINE", global = true)]
    pub engine: Option<EngineKind>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub images_dir: PathBuf,
    pub arch: Arch,
    pub remote_prefix: String,
    pub local_prefix: String,
    pub tag_scheme: TagScheme,
    pub non_test: Vec<String>,
    pub build_args: Vec<String>,
    pub engine: EngineKind,
    /// Registries spoken to over plain HTTP besides loopback and the docker
    /// daemon's `insecure-registries`: `host[:port]` or an IP range.
    pub insecure_registries: Vec<String>,
    /// Builds take unchanged steps from the image's previous version.
    pub cache_from: bool,
    /// Where the images' source lives (a repository URL), for the
    /// `org.opencontainers.image.source` label of what is built.
    pub source: Option<String>,
    /// Someone watches the output on a terminal (not CI, not a pipe): a live
    /// progress line rather than a line per image and log tails.
    pub interactive: bool,
    /// Where build logs go, a directory per architecture: `xtask-logs` in
    /// cargo's target directory.
    pub logs: PathBuf,
}

impl Settings {
    /// `workspace` anchors the settings file's relative paths; `cwd` anchors
    /// paths the user typed.
    pub fn resolve(file: FileConfig, o: Overrides, workspace: &Path, cwd: &Path) -> Result<Settings> {
        let images_dir = match o.images_dir {
            Some(dir) => cwd.join(dir),
            None => workspace.join(file.images_dir.as_deref().unwrap_or("images")),
        };
        let arch = match o.arch {
            Some(a) => a,
            None => Arch::host()?,
        };
        let tag_scheme = match (o.tag_scheme, file.tag_scheme) {
            (Some(scheme), _) => scheme,
            (None, Some(scheme)) => scheme.parse()?,
            (None, None) => TagScheme::Content,
        };
        let engine = match (o.engine, file.engine) {
            (Some(engine), _) => engine,
            (None, Some(engine)) => engine.parse()?,
            (None, None) => EngineKind::Docker,
        };
        let non_test = match o.non_test_images {
            Some(list) => split_legacy_list(&list),
            None => file.non_test_images.unwrap_or_default(),
        };
        let remote_prefix =
            o.remote_image_prefix.or(file.remote_image_prefix).unwrap_or_else(|| "localhost:5000/images".into());
        let local_prefix =
            o.local_image_prefix.or(file.local_image_prefix).unwrap_or_else(|| "gvisor.dev/images".into());
        for (what, prefix) in [("REMOTE_IMAGE_PREFIX", &remote_prefix), ("LOCAL_IMAGE_PREFIX", &local_prefix)] {
            check_prefix(what, prefix)?;
        }
        let build_args = o.build_args.as_deref().map(split_build_args).transpose()?.unwrap_or_default();
        Ok(Settings {
            images_dir,
            arch,
            remote_prefix: remote_prefix.trim_end_matches('/').to_string(),
            local_prefix: local_prefix.trim_end_matches('/').to_string(),
            tag_scheme,
            non_test,
            build_args,
            engine,
            insecure_registries: file.insecure_registries.unwrap_or_default(),
            cache_from: file.cache_from.unwrap_or(true),
            source: file.source.filter(|s| !s.trim().is_empty()),
            interactive: false,
            logs: workspace.join("target").join("xtask-logs"),
        })
    }
}

/// An environment variable that carries a setting.
pub struct Variable {
    pub name: &'static str,
    /// The resolved setting as the variable would spell it, the images root
    /// relative to the given directory when under it (`images`, as the
    /// legacy Makefile's paths began). `None` for what [`Settings`] does not
    /// hold: the settings file's path and the options of some commands.
    pub value: Option<fn(&Settings, &Path) -> String>,
}

/// Every environment variable that carries a setting, those [`Settings`]
/// holds first, in the order `cargo xtask settings` prints them. The
/// command line's flags read these (their `env`), and the Makefile forwards
/// these: tests hold both to this table.
pub const VARIABLES: [Variable; 11] = [
    Variable { name: "IMAGES_DIR", value: Some(|s, cwd| relative(&s.images_dir, cwd)) },
    Variable { name: "ARCH", value: Some(|s, _| s.arch.to_string()) },
    Variable { name: "REMOTE_IMAGE_PREFIX", value: Some(|s, _| s.remote_prefix.clone()) },
    Variable { name: "LOCAL_IMAGE_PREFIX", value: Some(|s, _| s.local_prefix.clone()) },
    Variable { name: "TAG_SCHEME", value: Some(|s, _| s.tag_scheme.as_str().to_string()) },
    Variable { name: "NON_TEST_IMAGES", value: Some(|s, _| s.non_test.join("\\|")) },
    Variable { name: "DOCKER_BUILD_ARGS", value: Some(|s, _| join_build_args(&s.build_args)) },
    Variable { name: "IMAGES_ENGINE", value: Some(|s, _| s.engine.program().to_string()) },
    Variable { name: "IMAGES_CONFIG", value: None },
    Variable { name: "SKIP_IMAGE_LOAD", value: None },
    Variable { name: "DOCKER_PUSH_AS_LATEST", value: None },
];

/// A path as given from `cwd`: relative when under it.
fn relative(path: &Path, cwd: &Path) -> String {
    match path.strip_prefix(cwd) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
impl Settings {
    /// For unit tests: these prefixes, x86_64, the rest as built in, with
    /// `/w` as the workspace.
    pub fn for_tests(local_prefix: &str, remote_prefix: &str) -> Settings {
        let o = Overrides {
            local_image_prefix: Some(local_prefix.into()),
            remote_image_prefix: Some(remote_prefix.into()),
            arch: Some(Arch::X86_64),
            ..Overrides::default()
        };
        Settings::resolve(FileConfig::default(), o, Path::new("/w"), Path::new("/w")).unwrap()
    }
}

/// `NON_TEST_IMAGES` keeps the legacy `grep` alternation syntax, `a\|b\|c`,
/// and takes the plain `a|b|c` too.
pub fn split_legacy_list(list: &str) -> Vec<String> {
    list.replace("\\|", "|").split('|').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `DOCKER_BUILD_ARGS` split into words as the legacy Makefile's shell split
/// it: quotes, backslashes and `#` comments as POSIX has them. What the shell
/// would expand (`$`, backquotes, a leading `~`) is refused rather than passed
/// on as it is: the build would get other arguments than under the Makefile.
pub fn split_build_args(value: &str) -> Result<Vec<String>> {
    if let Some(c) = shell_expansion(value) {
        bail!(
            "DOCKER_BUILD_ARGS `{value}` holds `{c}`, which a shell would expand and this tool does not: \
             write out what it stands for, or put it in single quotes to pass it as it is"
        );
    }
    shlex::split(value).with_context(|| {
        format!("DOCKER_BUILD_ARGS `{value}` has an unclosed quote or ends in a backslash: close the quote")
    })
}

/// The first character of `value` that a POSIX shell would expand: `$` or a
/// backquote outside single quotes and not escaped by a backslash, or a `~`
/// that starts a word. Nothing in a comment counts.
fn shell_expansion(value: &str) -> Option<char> {
    let (mut single, mut double, mut escaped, mut comment, mut word_start) = (false, false, false, false, true);
    for c in value.chars() {
        let starts_word = std::mem::replace(&mut word_start, false);
        match c {
            '\n' if comment => (comment, word_start) = (false, true),
            _ if comment => {}
            _ if escaped => escaped = false,
            '\'' if !double => single = !single,
            _ if single => {}
            '"' => double = !double,
            _ if double && !matches!(c, '$' | '`' | '\\') => {}
            '\\' => escaped = true,
            '$' | '`' => return Some(c),
            '~' if starts_word => return Some(c),
            '#' if starts_word => comment = true,
            ' ' | '\t' | '\n' => word_start = true,
            _ => {}
        }
    }
    None
}

/// Build arguments as `settings` prints them: words without blanks, quotes
/// or what a shell expands stay as they are, the others are quoted, so that
/// [`split_build_args`] gives the same words back.
fn join_build_args(args: &[String]) -> String {
    let plain =
        |w: &str| !w.is_empty() && !w.starts_with(['#', '~']) && !w.contains(|c: char| " \t\n'\"\\$`".contains(c));
    let quoted = args.iter().map(|w| match plain(w) {
        true => w.into(),
        false => shlex::try_quote(w).map_or_else(|_| w.into(), |q| q.into_owned()),
    });
    quoted.collect::<Vec<String>>().join(" ")
}

/// A prefix names repositories the engine is handed on its command line,
/// as positional words: one starting with `-` would be read as an option.
fn check_prefix(what: &str, prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
        && !prefix.contains("//");
    let shown = crate::model::excerpt(prefix);
    if !ok {
        bail!("{what} `{shown}` is not a valid image repository prefix: use lower case letters, digits and . _ - / :");
    }
    if prefix.starts_with('-') {
        bail!(
            "{what} `{shown}` starts with `-`, which the engine would read as an option: start it with a registry \
             host or a letter, e.g. localhost:5000/images"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefixes make the names handed to the engine: none may start
    /// with `-`, where the engine would take the name for an option.
    #[test]
    fn prefixes_that_read_as_options_are_refused() {
        let resolve = |local: &str, remote: &str| {
            let o = Overrides {
                local_image_prefix: Some(local.into()),
                remote_image_prefix: Some(remote.into()),
                arch: Some(Arch::X86_64),
                ..Overrides::default()
            };
            Settings::resolve(FileConfig::default(), o, Path::new("/w"), Path::new("/w"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let refused = |what: &str, prefix: &str| {
            format!(
                "{what} `{prefix}` starts with `-`, which the engine would read as an option: start it with a \
                 registry host or a letter, e.g. localhost:5000/images"
            )
        };
        assert_eq!(resolve("--help", "r.example/x"), Err(refused("LOCAL_IMAGE_PREFIX", "--help")));
        assert_eq!(resolve("l.example/x", "-rf"), Err(refused("REMOTE_IMAGE_PREFIX", "-rf")));
        assert_eq!(resolve("-", "r.example/x"), Err(refused("LOCAL_IMAGE_PREFIX", "-")));
        assert_eq!(resolve("l-1.example/x-y", "localhost:5000/a-b"), Ok(()));
        assert_eq!(
            resolve("l.example/\u{1b}[2K", "r.example/x"),
            Err("LOCAL_IMAGE_PREFIX `l.example/\\u{1b}[2K` is not a valid image repository prefix: use lower case \
                 letters, digits and . _ - / :"
                .to_string())
        );
    }

    fn build_args(value: &str) -> Result<Vec<String>> {
        let o = Overrides { build_args: Some(value.into()), arch: Some(Arch::X86_64), ..Overrides::default() };
        Settings::resolve(FileConfig::default(), o, Path::new("/w"), Path::new("/w")).map(|s| s.build_args)
    }

    /// `DOCKER_BUILD_ARGS` is split as the legacy Makefile's shell split it.
    #[test]
    fn build_args_are_split_as_a_shell_splits_them() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            (" \t\n", &[]),
            ("--build-arg X=1 --no-cache", &["--build-arg", "X=1", "--no-cache"]),
            ("  --build-arg\tX=1\n", &["--build-arg", "X=1"]),
            (r#"--build-arg MSG="hello world""#, &["--build-arg", "MSG=hello world"]),
            ("--build-arg 'MSG=hello world'", &["--build-arg", "MSG=hello world"]),
            (r#"--build-arg MSG=hello\ world"#, &["--build-arg", "MSG=hello world"]),
            (r#"--build-arg "Q=say \"hi\" \$5 \a""#, &["--build-arg", r#"Q=say "hi" $5 \a"#]),
            ("--build-arg 'P=$HOME `x` ~'", &["--build-arg", "P=$HOME `x` ~"]),
            (r#"--build-arg P=\$HOME A=x~ 'it'\''s'"#, &["--build-arg", "P=$HOME", "A=x~", "it's"]),
            ("--build-arg X=''", &["--build-arg", "X="]),
            ("--no-cache # $HOME is `not` read\n--pull", &["--no-cache", "--pull"]),
            ("a#b", &["a#b"]),
        ];
        for (value, words) in cases {
            assert_eq!(build_args(value).unwrap(), *words, "{value:?}");
        }
    }

    /// What a shell would expand, and quotes left open, are refused, naming
    /// the variable.
    #[test]
    fn build_args_a_shell_would_expand_are_refused() {
        let expands = |value: &str, c: char| {
            format!(
                "DOCKER_BUILD_ARGS `{value}` holds `{c}`, which a shell would expand and this tool does not: write \
                 out what it stands for, or put it in single quotes to pass it as it is"
            )
        };
        let unclosed = |value: &str| {
            format!("DOCKER_BUILD_ARGS `{value}` has an unclosed quote or ends in a backslash: close the quote")
        };
        let cases = [
            ("--build-arg HOME=$HOME", expands("--build-arg HOME=$HOME", '$')),
            (r#"--build-arg "H=$HOME""#, expands(r#"--build-arg "H=$HOME""#, '$')),
            ("--build-arg V=`git describe`", expands("--build-arg V=`git describe`", '`')),
            (r#"--build-arg "V=$(date)""#, expands(r#"--build-arg "V=$(date)""#, '$')),
            ("--build-arg X=1 ~/args", expands("--build-arg X=1 ~/args", '~')),
            ("# a comment\n$X", expands("# a comment\n$X", '$')),
            (r#"--build-arg MSG="hello world"#, unclosed(r#"--build-arg MSG="hello world"#)),
            ("--build-arg 'MSG=hello", unclosed("--build-arg 'MSG=hello")),
            ("--no-cache \\", unclosed("--no-cache \\")),
        ];
        for (value, message) in cases {
            assert_eq!(build_args(value).unwrap_err().to_string(), message, "{value:?}");
        }
    }

    /// `settings` prints the words so that they split into the same words.
    #[test]
    fn build_args_print_as_they_split() {
        let words = ["--build-arg", "X=1", "MSG=hello world", "it's", "$5 `x`", "a\\b", "#c", "~", "", "^"];
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let printed = join_build_args(&words);
        assert_eq!(build_args(&printed).unwrap(), words, "{printed}");
        assert_eq!(join_build_args(&words[..2]), "--build-arg X=1");
    }
}
