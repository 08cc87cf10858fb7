//! Settings: the committed `images.toml`, overridden by environment variables
//! and flags, resolved once into a [`Settings`] value the rest of the tool reads.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The architecture images are built for, spelled as the legacy Makefile's `ARCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];
    /// Every spelling `ARCH` and `--arch` accept.
    pub const SPELLINGS: [&'static str; 4] = ["x86_64", "amd64", "aarch64", "arm64"];

    pub fn host() -> Result<Arch> {
        std::env::consts::ARCH.parse().context("unsupported host architecture")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The engine's `--platform` value.
    pub fn platform(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux/amd64",
            Arch::Aarch64 => "linux/arm64",
        }
    }

    /// `<name>_<arch>` split in two, as remote repository names end.
    pub fn split_suffix(name: &str) -> Option<(&str, Arch)> {
        Arch::ALL.into_iter().find_map(|arch| Some((name.strip_suffix(arch.as_str())?.strip_suffix('_')?, arch)))
    }

    /// The architecture as OCI image configs record it.
    pub fn oci(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
}

/// An image's platform as its config records it: `linux/arm64`, `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// Whether an image of this platform is an image for `arch`. arm64's only
    /// variant is v8, which engines record or leave out.
    pub fn is(&self, arch: Arch) -> bool {
        self.os == "linux"
            && self.architecture == arch.oci()
            && match arch {
                Arch::Aarch64 => self.variant.is_empty() || self.variant == "v8",
                Arch::X86_64 => self.variant.is_empty(),
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl FromStr for Arch {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Arch> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => bail!("unknown architecture `{s}`: use x86_64 (or amd64) or aarch64 (or arm64)"),
        }
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How tags are computed; see the README's "How tags are made".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        match s {
            "content" => Ok(TagScheme::Content),
            "gvisor" => Ok(TagScheme::Gvisor),
            _ => bail!("unknown tag scheme `{s}`: use content or gvisor"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        match s {
            "docker" => Ok(EngineKind::Docker),
            "podman" => Ok(EngineKind::Podman),
            _ => bail!("unknown engine `{s}`: use docker or podman"),
        }
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
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub images_dir: Option<PathBuf>,
    pub arch: Option<String>,
    pub remote_image_prefix: Option<String>,
    pub local_image_prefix: Option<String>,
    pub tag_scheme: Option<String>,
    pub non_test_images: Option<String>,
    pub build_args: Option<String>,
    pub engine: Option<String>,
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
}

impl Settings {
    /// `workspace` anchors the settings file's relative paths; `cwd` anchors
    /// paths the user typed.
    pub fn resolve(file: FileConfig, o: Overrides, workspace: &Path, cwd: &Path) -> Result<Settings> {
        let images_dir = match o.images_dir {
            Some(dir) => cwd.join(dir),
            None => workspace.join(file.images_dir.as_deref().unwrap_or("images")),
        };
        let arch = match o.arch.as_deref().filter(|s| !s.is_empty()) {
            Some(a) => a.parse()?,
            None => Arch::host()?,
        };
        let tag_scheme = o.tag_scheme.or(file.tag_scheme).unwrap_or_else(|| "content".into()).parse()?;
        let engine = o.engine.or(file.engine).unwrap_or_else(|| "docker".into()).parse()?;
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
        let build_args = o.build_args.map(|a| a.split_whitespace().map(String::from).collect()).unwrap_or_default();
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
        })
    }
}

/// `NON_TEST_IMAGES` keeps the legacy `grep` alternation syntax, `a\|b\|c`,
/// and takes the plain `a|b|c` too.
pub fn split_legacy_list(list: &str) -> Vec<String> {
    list.replace("\\|", "|").split('|').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

fn check_prefix(what: &str, prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
        && !prefix.contains("//");
    if !ok {
        bail!("{what} `{prefix}` is not a valid image repository prefix: use lower case letters, digits and . _ - / :");
    }
    Ok(())
}
