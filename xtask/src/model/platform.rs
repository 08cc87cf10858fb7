//! The architectures images are built for, and the platforms engines and
//! registries record.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, Result};

/// The architecture images are built for, spelled as the legacy Makefile's `ARCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(alias = "arm64")]
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// `--arch`'s parser: every spelling is listed when one is wrong, the
    /// aliases too.
    pub(crate) fn parser() -> impl clap::builder::TypedValueParser<Value = Arch> {
        use clap::builder::TypedValueParser;
        clap::builder::PossibleValuesParser::new(["x86_64", "amd64", "aarch64", "arm64"])
            .map(|s| s.parse::<Arch>().expect("a listed spelling"))
    }

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
        <Arch as clap::ValueEnum>::from_str(s, false)
            .map_err(|_| anyhow::anyhow!("unknown architecture `{s}`: use x86_64 (or amd64) or aarch64 (or arm64)"))
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
