//! The command line: global settings, subcommands and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Overrides;

/// Environment variables that carry settings.
pub const ENV_SETTINGS: &[&str] = &[
    "IMAGES_CONFIG",
    "IMAGES_DIR",
    "ARCH",
    "REMOTE_IMAGE_PREFIX",
    "LOCAL_IMAGE_PREFIX",
    "TAG_SCHEME",
    "NON_TEST_IMAGES",
    "DOCKER_BUILD_ARGS",
    "IMAGES_ENGINE",
    "SKIP_IMAGE_LOAD",
    "DOCKER_PUSH_AS_LATEST",
];

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Keep a project's test container images: discover, tag, load, build and push them",
    long_about = "Keep a project's test container images.\n\n\
        Every directory under the images root that holds a Dockerfile (or a Dockerfile.<ARCH>) is an \
        image, named after its path with `/` replaced by `_`. Each image is tagged by a hash of its \
        inputs; `load` uses the local copy, else pulls that tag from the cache registry, else builds it.",
    after_help = "Settings come from flags, then environment variables, then xtask/images.toml.\n\
        Legacy make targets (make load-foo, make push-all-images) forward to these commands."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Settings")]
pub struct Global {
    /// Settings file [default: xtask/images.toml]
    #[arg(long, env = "IMAGES_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding the image directories [default: images]
    #[arg(long, env = "IMAGES_DIR", global = true, value_name = "DIR")]
    pub images_dir: Option<PathBuf>,
    /// Architecture to build for: x86_64 (amd64) or aarch64 (arm64) [default: the host's]
    #[arg(long, env = "ARCH", global = true)]
    pub arch: Option<String>,
    /// Registry repository prefix for the shared cache: <prefix>/<path>_<arch>:<tag>
    #[arg(long, env = "REMOTE_IMAGE_PREFIX", global = true, value_name = "PREFIX")]
    pub remote_image_prefix: Option<String>,
    /// Prefix of the local names tests use: <prefix>/<path>:<tag> and :latest
    #[arg(long, env = "LOCAL_IMAGE_PREFIX", global = true, value_name = "PREFIX")]
    pub local_image_prefix: Option<String>,
    /// How tags are computed: content or gvisor (the legacy Makefile's tags)
    #[arg(long, env = "TAG_SCHEME", global = true, value_name = "SCHEME")]
    pub tag_scheme: Option<String>,
    /// Images that are not test images, as `a\|b`: an entry matches when it occurs in the image's name or path
    #[arg(long, env = "NON_TEST_IMAGES", global = true, value_name = "LIST")]
    pub non_test_images: Option<String>,
    /// Extra arguments for every build, split on whitespace (e.g. "--build-arg X=1")
    #[arg(long, env = "DOCKER_BUILD_ARGS", global = true, value_name = "ARGS", allow_hyphen_values = true)]
    pub build_args: Option<String>,
    /// Container engine: docker or podman
    #[arg(long, env = "IMAGES_ENGINE", global = true)]
    pub engine: Option<String>,
}

impl Global {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            images_dir: self.images_dir.clone(),
            arch: self.arch.clone(),
            remote_image_prefix: self.remote_image_prefix.clone(),
            local_image_prefix: self.local_image_prefix.clone(),
            tag_scheme: self.tag_scheme.clone(),
            non_test_images: self.non_test_images.clone(),
            build_args: self.build_args.clone(),
            engine: self.engine.clone(),
        }
    }
}

#[derive(Debug, Args, Clone, Copy)]
pub struct ListArgs {
    /// Print a JSON array of objects (name, path, dockerfile, group, tag, local, remote, test, arch)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every image name, sorted
    ListAllImages(ListArgs),
    /// Print every test image name (all images less NON_TEST_IMAGES), sorted
    ListAllTestImages(ListArgs),
    /// Print the local name and tag of images: <LOCAL_IMAGE_PREFIX>/<path>:<tag>
    LocalImage {
        /// Image names or groups
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Make images present locally: use the local copy, else pull the remote tag, else build; then tag
    Load(Selected),
    /// Pull the remote tag of images, then give them their local names
    Pull(Selected),
    /// Build images locally, whatever the registry has
    #[command(visible_alias = "build")]
    Rebuild(Selected),
    /// Give the local names (:<tag> and :latest) to images present under their remote names
    Tag(Selected),
    /// Build the images whose tag the registry lacks (without pushing them)
    Test(Selected),
    /// Build and push the images whose tag the registry lacks; skip the rest
    Push(Selected),
    /// `load` every image
    LoadAllImages(AllArgs),
    /// `load` every test image
    LoadAllTestImages(AllArgs),
    /// `rebuild` every image
    BuildAllImages(AllArgs),
    /// `push` every image
    PushAllImages(AllArgs),
    /// `push` every test image
    PushAllTestImages(AllArgs),
    /// `test` every test image
    TestAllTestImages(AllArgs),
    /// Make foreign-architecture binaries runnable (qemu binfmt), for building ARCH on this host
    RegisterCross,
    /// Publish <REMOTE_IMAGE_PREFIX>/<path>:<tag> as a multi-arch index over the per-arch images in the registry
    PushManifest(Selected),
}

#[derive(Debug, Args, Clone)]
pub struct AllArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Work on shard K of N: N CI machines given 1/N..N/N together cover every image once
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::shard::Shard>,
}

#[derive(Debug, Args, Clone)]
pub struct Selected {
    /// Image names (basic_hello, or basic/hello) or groups (basic)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Images worked on at once [default: number of cores]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// When an image fails, finish the others instead of stopping
    #[arg(long)]
    pub keep_going: bool,
    /// Print what would be pulled, built, tagged and pushed, and why; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan (with --dry-run) or the outcome for each image as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Never pull or build: fail naming each image that is not present locally
    #[arg(long, env = "SKIP_IMAGE_LOAD")]
    pub skip_image_load: bool,
    /// Also point the remote :latest at each pushed image's tag
    #[arg(long, env = "DOCKER_PUSH_AS_LATEST")]
    pub push_as_latest: bool,
}
