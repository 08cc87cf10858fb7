//! The command line: global settings, subcommands and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands::RunArgs;
use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
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

impl Cli {
    /// Whether the command asked for JSON on stdout: its errors go there too.
    pub fn json(&self) -> bool {
        match &self.command {
            Command::ListAllImages(a) | Command::ListAllTestImages(a) => a.json,
            Command::Load(s) => s.opts.common.json,
            Command::Pull(s) | Command::Tag(s) => s.opts.common.json,
            Command::Rebuild(s) | Command::Test(s) => s.opts.common.json,
            Command::Push(s) => s.opts.common.json,
            Command::LoadAllImages(a) | Command::LoadAllTestImages(a) => a.opts.common.json,
            Command::BuildAllImages(a) | Command::TestAllTestImages(a) => a.opts.common.json,
            Command::PushAllImages(a) | Command::PushAllTestImages(a) => a.opts.common.json,
            Command::PushManifest(s) => s.opts.json,
            Command::Check(a) => a.json,
            Command::Prune(a) => a.json,
            Command::Gc(a) => a.json,
            Command::Status(a) => a.json,
            Command::Pin(a) => a.json,
            Command::Verify(a) => a.json,
            Command::LocalImage { .. } | Command::Settings { .. } | Command::Init(_) | Command::RegisterCross => false,
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Settings")]
pub struct Global {
    /// Settings file [default: xtask/images.toml]
    #[arg(long, env = "IMAGES_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Debug, Args, Clone)]
pub struct ListArgs {
    /// Print a JSON document: {"schema": 1, "images": [{name, path, dockerfile, group, arch, tag, local, remote, test}]}
    #[arg(long)]
    pub json: bool,
    /// List only shard K of N: the images the `*-all-*` commands work on with the same --shard
    /// (`auto`: this CI parallel job's)
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<crate::catalog::shard::Shard>,
    /// Only images whose tag differs from their tag at git revision REV, or that were no image there
    #[arg(long, value_name = "REV")]
    pub changed_since: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every image name, sorted
    ListAllImages(ListArgs),
    /// Print every test image name (all images less NON_TEST_IMAGES), sorted
    ListAllTestImages(ListArgs),
    /// Print the local name and tag of images (<LOCAL_IMAGE_PREFIX>/<path>:<tag>), or another field
    LocalImage {
        /// Print this field instead, a key of the --json rows: name, path, dockerfile, group, arch, tag,
        /// local, remote or test (only tag, local and remote hash anything)
        #[arg(long, value_name = "FIELD", default_value = "local")]
        print: crate::commands::listing::Field,
        /// Image names or groups
        #[arg(required = true, value_name = "IMAGE", value_parser = image_name)]
        images: Vec<String>,
    },
    /// Print the resolved settings as VARIABLE=value lines, or the value of each VARIABLE named
    #[command(long_about = "Print the resolved settings (flags, then environment, then the settings file) as \
            VARIABLE=value lines, or the value of each VARIABLE named: IMAGES_DIR (relative to the current \
            directory when under it), ARCH, REMOTE_IMAGE_PREFIX, LOCAL_IMAGE_PREFIX, TAG_SCHEME, \
            NON_TEST_IMAGES, DOCKER_BUILD_ARGS, IMAGES_ENGINE.")]
    Settings {
        /// Variables to print the value of
        #[arg(value_name = "VARIABLE")]
        names: Vec<String>,
    },
    /// Write the settings file from a legacy images Makefile (its prefixes and non-test images) with the gvisor tag scheme
    #[command(long_about = "Write the settings file (xtask/images.toml, or --config) from a legacy images Makefile \
        such as tools/images.mk, before the shim replaces it: its REMOTE_IMAGE_PREFIX, LOCAL_IMAGE_PREFIX and \
        NON_TEST_IMAGES, and tag_scheme = \"gvisor\", so that the tags already in the registry stay valid. An \
        existing settings file is kept unless --force is given. Also adds target/ (where cargo builds the tool) \
        to the workspace's .gitignore, creating it, unless a line there ignores it already.")]
    Init(InitArgs),
    /// Make images present locally: use the local copy, else pull the remote tag, else build; then tag
    Load(Selected<LoadOptions>),
    /// Pull the remote tag of images, then give them their local names
    Pull(Selected<PlainOptions>),
    /// Build images locally, whatever the registry has
    #[command(visible_alias = "build")]
    Rebuild(Selected<BuildOptions>),
    /// Give the local names (:<tag> and :latest) to images present under their remote names
    Tag(Selected<PlainOptions>),
    /// Build the images whose tag the registry lacks (without pushing them)
    Test(Selected<BuildOptions>),
    /// Build and push the images whose tag the registry lacks; skip the rest
    Push(Selected<PushOptions>),
    /// `load` every image
    LoadAllImages(AllArgs<LoadOptions>),
    /// `load` every test image
    LoadAllTestImages(AllArgs<LoadOptions>),
    /// `rebuild` every image
    BuildAllImages(AllArgs<BuildOptions>),
    /// `push` every image
    PushAllImages(AllArgs<PushOptions>),
    /// `push` every test image
    PushAllTestImages(AllArgs<PushOptions>),
    /// `test` every test image
    TestAllTestImages(AllArgs<BuildOptions>),
    /// Make foreign-architecture binaries runnable (qemu binfmt), for building ARCH on this host
    RegisterCross,
    /// Publish <REMOTE_IMAGE_PREFIX>/<path>:<tag> as a multi-arch index over the per-arch images in the registry
    PushManifest(Selected<ManifestOptions>),
    /// Check Dockerfiles and build contexts for reproducibility and correctness hazards, before anything is built
    #[command(
        long_about = "Check every image's Dockerfiles (for each architecture) and build context for \
            reproducibility and correctness hazards, before anything is built. Prints one line per finding, \
            `path:line: level: message [rule]`, on stdout, and exits 1 when there is an error (or a warning, \
            with --deny-warnings).",
        after_long_help = crate::commands::check::RULES_HELP
    )]
    Check(CheckArgs),
    /// Show where each image stands: its local and registry state, size, layers, architecture, when it was built
    #[command(long_about = "Show where each image stands, for ARCH: its tag; locally, whether the image with that \
        tag is present (current), only an older one or one for another architecture (stale), or none (absent); \
        whether the registry has the tag; and the local image's size, layers, architecture, build time and the \
        revision it was built from. One engine call lists the local images and one reads them; the registry gets \
        one request per image, in parallel. With --bases, also whether each external base the image was built on \
        moved: the digest each had at the build (a label of the image: the local one, else the registry's) \
        against where its tag points now, asked of each base's registry once; a registry that cannot be asked is \
        'could not check'. Without --bases, no base registry is asked.")]
    Status(StatusArgs),
    /// Remove the local images of catalog images whose tag is not current, under local and remote names
    #[command(long_about = "Remove the local images of catalog images whose tag is not current: \
        <LOCAL_IMAGE_PREFIX>/<path>:<tag> and <REMOTE_IMAGE_PREFIX>/<path>_<arch>:<tag>. Every current tag (for \
        every architecture the image has) stays, and :latest when it points at one. Current means given by this \
        work tree, by HEAD, by any local branch head, or by any other work tree of the repository (git worktree: \
        its HEAD, and its files as they are on disk), so that one checkout does not remove what another loaded \
        on the same engine; a name kept for another checkout is listed as skipped, saying where its tag is \
        current (--work-tree-only keeps this work tree's tags alone). Names outside the two prefixes are never \
        touched unless their prefix is given to --other-prefixes, nor are images a container uses; when such \
        names keep an image whose names go, a note on stderr names them. Every architecture, or only --arch \
        (ARCH).")]
    Prune(PruneArgs),
    /// Delete the registry's tags that no kept git revision gives its image (a dry run unless --delete)
    #[command(long_about = "Delete from the registry the tags of <REMOTE_IMAGE_PREFIX>/<path>_<arch> \
        repositories (those of images that no longer exist too) that are not the tag of the image at any git \
        revision to keep: --keep (revisions and ranges, default HEAD) and --keep-since. Tags at old revisions \
        are computed from git objects, without a checkout. latest stays, and so does a tag that cannot be \
        attributed, a tag naming the manifest of one that stays, and a manifest an index that stays lists. \
        Without --delete, prints what would be deleted. Deletes manifests by digest; the registry's garbage \
        collector frees the blobs. Refuses a REMOTE_IMAGE_PREFIX that is a registry alone (host[:port]): it \
        needs a repository path. With --delete, deletes nothing from a registry holding tags of an image at a \
        kept revision but none that the kept revisions give it, as one filled under other settings (build \
        args, tag scheme, local prefix) does; a dry run warns of it. Tags the work tree gives its images now \
        are marked (work tree).")]
    Gc(GcArgs),
    /// Pin every external base image of the Dockerfiles to the digest its tag points at (FROM, COPY --from, ARG defaults)
    #[command(long_about = "Pin every external base image of the Dockerfiles (for each architecture) to the digest \
        its tag points at in its registry: `FROM name:tag` becomes `FROM name:tag@sha256:<digest>`, and so do \
        COPY --from images and the global ARG defaults a FROM names (`ARG BASE=name:tag`, `FROM ${BASE}`). A \
        multi-platform tag is pinned to its index. Catalog images, stages and scratch are left alone, and so is \
        every other byte of the file. Pinned bases stay as they are, unless --update. Nothing is written unless \
        every base resolves. The digest is part of the Dockerfile, so the content tag of each image whose base \
        moves changes with it.")]
    Pin(PinArgs),
    /// Build images twice from nothing and compare the two: does each rebuild the same?
    #[command(long_about = "Build each image twice from nothing (no cache, two separate builds, with \
        SOURCE_DATE_EPOCH, as a build argument and in the builder's environment, set to the time of the last commit \
        that changed the image's directory; HEAD's time when it has uncommitted changes; 0 outside git) and \
        compare the two images, as the engine saves them: their configs, less the fields that only record when \
        and where the build ran (created, each step's created, ...), and every entry of every layer: its path, \
        type, content (sha256), mode, owner and link target. Prints `reproducible` or `not reproducible` for each \
        image, with the paths that differ under the Dockerfile step that made their layer, a line per kind of \
        difference. File times (mtime) are shown on a line of their own, with what rewriting them to \
        SOURCE_DATE_EPOCH would do, but do not make an image `not reproducible`: they change its digest, not \
        what it holds. An image built FROM another catalog image needs that image present at its current tag \
        (`cargo xtask load` it first). The two builds are named <LOCAL_IMAGE_PREFIX>/<path>_verify:<pid>-1 and -2, \
        never the image's own names, and removed afterwards, on failure and Ctrl-C too.\n\n\
        Exit status: 0 when every image is reproducible, 1 when one is not or could not be verified (a build \
        failed), 2 for a bad command line, 130 when interrupted.")]
    Verify(VerifyArgs),
}

#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// Image names, groups or directories of images [default: every image]
    #[arg(value_name = "IMAGE", value_parser = image_name)]
    pub images: Vec<String>,
    /// Only test images (every image less NON_TEST_IMAGES)
    #[arg(long)]
    pub test_images: bool,
    /// Only images whose tag differs from their tag at git revision REV, or that were no image there
    #[arg(long, value_name = "REV")]
    pub changed_since: Option<String>,
    /// Only shard K of N of the images, as the `*-all-*` commands split them (`auto`: this CI parallel job's)
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<crate::catalog::shard::Shard>,
    /// Paths shown for each kind of difference in a layer; the rest are counted
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_paths: u16,
    /// Print a JSON document: {"schema": 1, "arch", "builder", "images": [...]}, one object per image
    #[arg(long)]
    pub json: bool,
    /// When an image cannot be verified (a build fails), go on with the others
    #[arg(long)]
    pub keep_going: bool,
    /// Stream every engine call's command line and output to stderr
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PinArgs {
    /// Image names or groups [default: every image]
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Also move each pinned base whose tag points elsewhere now, printing old → new
    #[arg(long, conflicts_with = "check")]
    pub update: bool,
    /// Change nothing: exit 1 when a base is unpinned, or its tag points elsewhere now (drifted), listing each
    #[arg(long)]
    pub check: bool,
    /// Print a JSON document: {"schema": 1, "bases": [{path, line, reference, state, digest, current}]}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Image names or groups to check [default: every image]
    #[arg(value_name = "IMAGE", value_parser = image_name)]
    pub images: Vec<String>,
    /// Print a JSON document: {"schema": 1, "findings": [{path, line, level, rule, message}]}
    #[arg(long)]
    pub json: bool,
    /// Fail on warnings too, as CI should
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Image names or groups [default: every image]
    #[arg(value_name = "IMAGE", value_parser = image_name)]
    pub images: Vec<String>,
    /// Do not ask the registry
    #[arg(long)]
    pub local: bool,
    /// Also tell, per image, whether a base it was built on moved: its tag now points at another digest than the one
    /// recorded at the build (asks each base's registry, once per base)
    #[arg(long)]
    pub bases: bool,
    /// Print a JSON document on stdout: {"schema": 1, "images": [...]}, one object per image
    #[arg(long)]
    pub json: bool,
    /// Also append a Markdown summary table to FILE (e.g. "$GITHUB_STEP_SUMMARY")
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

impl Command {
    /// The git revision `--changed-since` names, for the commands that take it.
    pub fn changed_since(&self) -> Option<&str> {
        match self {
            Command::ListAllImages(a) | Command::ListAllTestImages(a) => a.changed_since.as_deref(),
            Command::LoadAllImages(a) | Command::LoadAllTestImages(a) => a.changed_since.as_deref(),
            Command::BuildAllImages(a) | Command::TestAllTestImages(a) => a.changed_since.as_deref(),
            Command::PushAllImages(a) | Command::PushAllTestImages(a) => a.changed_since.as_deref(),
            Command::Verify(a) => a.changed_since.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct PruneArgs {
    /// Print what would be removed and why; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print each name and what became of it as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Keep only the tags this work tree gives, not those of HEAD, the local branch heads or other work trees
    #[arg(long)]
    pub work_tree_only: bool,
    /// Also prune names of catalog images under these prefixes (<PREFIX>/<path>:<tag>,
    /// <PREFIX>/<path>_<arch>:<tag>), such as the prefixes used before a change of settings
    #[arg(long, value_name = "PREFIX", num_args = 1..)]
    pub other_prefixes: Vec<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GcArgs {
    /// Git revisions and ranges (A..B, A...B) whose images' tags stay [default: HEAD]
    #[arg(long, value_name = "REV", num_args = 1..)]
    pub keep: Vec<String>,
    /// Also keep the tags of every first-parent commit of HEAD this recent: 30d, 12h, 2w
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub keep_since: Option<u64>,
    /// Delete the tags (otherwise only print what would be deleted); refused when the registry looks filled under other settings
    #[arg(long)]
    pub delete: bool,
    /// Print each tag that goes, or stays for a reason, as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Registry repositories worked on at once [default: 8]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}

/// An image or group named on the command line. No image name starts with
/// `-`: such a word (after `--`, or from a make target such as `load--rf`)
/// was meant as an option, and is refused rather than carried further.
fn image_name(text: &str) -> Result<String, String> {
    if text.starts_with('-') {
        return Err("image names never start with `-`: give options before `--`, names after it".to_string());
    }
    Ok(text.to_string())
}

fn parse_age(text: &str) -> Result<u64, String> {
    crate::commands::gc::parse_age(text).map_err(|e| e.to_string())
}

/// `--shard K/N`, or `auto`: the CI parallel job's shard, read from the
/// environment here, with the other settings, not later.
fn parse_shard(text: &str) -> Result<crate::catalog::shard::Shard, String> {
    let shard = match text {
        "auto" => crate::catalog::shard::Shard::of_parallel_job(|name| std::env::var(name).ok()),
        _ => text.parse(),
    };
    shard.map_err(|e| e.to_string())
}

#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    /// The legacy Makefile to read REMOTE_IMAGE_PREFIX, LOCAL_IMAGE_PREFIX and NON_TEST_IMAGES from
    #[arg(long, value_name = "FILE")]
    pub from_makefile: PathBuf,
    /// Overwrite the settings file if it exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args, Clone)]
pub struct AllArgs<O: Args> {
    #[command(flatten)]
    pub opts: O,
    /// Work on shard K of N: N CI machines given 1/N..N/N together cover every image once. `auto`:
    /// this CI parallel job's, from BUILDKITE_PARALLEL_JOB(_COUNT), CI_NODE_INDEX/CI_NODE_TOTAL or
    /// PARTITION/TOTAL_PARTITIONS
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<crate::catalog::shard::Shard>,
    /// Only images whose tag differs from their tag at git revision REV, or that were no image there
    #[arg(long, value_name = "REV")]
    pub changed_since: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct Selected<O: Args> {
    /// Image names (basic_hello, basic/hello or basic/hello/), groups (basic) or directories of images
    #[arg(required = true, value_name = "IMAGE", value_parser = image_name)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub opts: O,
}

/// What every engine command takes.
#[derive(Debug, Args, Clone, Default, PartialEq, Eq)]
pub struct Common {
    /// Images worked on at once [default: twice the cores with docker, whose builds wait on the daemon;
    /// the cores with podman, whose builds contend for its store's locks]. Under buildx, the builds
    /// ready at the same moment go to one `docker buildx bake` (up to 64) whatever N
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// When an image fails, finish the others instead of stopping
    #[arg(long)]
    pub keep_going: bool,
    /// Print what would be pulled, built, tagged and pushed, and why, after looking at the engine and the registry; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan (with --dry-run) or the outcome as JSON on stdout (see the README's "JSON")
    #[arg(long)]
    pub json: bool,
    /// Print only errors and the final count
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,
    /// Stream every engine call's command line and output to stderr, each line prefixed with its image
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// `pull` and `tag`: nothing is built.
#[derive(Debug, Args, Clone, Default, PartialEq, Eq)]
pub struct PlainOptions {
    #[command(flatten)]
    pub common: Common,
}

/// `load` and its `*-all-*` forms.
#[derive(Debug, Args, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    #[command(flatten)]
    pub common: Common,
    /// Never pull or build: fail naming each image that is not present locally
    #[arg(long, env = "SKIP_IMAGE_LOAD", value_parser = clap::builder::FalseyValueParser::new())]
    pub skip_image_load: bool,
    /// Build from nothing: no previous version as a cache source, and the engine's own cache unused
    #[arg(long)]
    pub no_cache: bool,
}

/// `rebuild`, `test` and their `*-all-*` forms.
#[derive(Debug, Args, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    #[command(flatten)]
    pub common: Common,
    /// Build from nothing: no previous version as a cache source, and the engine's own cache unused
    #[arg(long)]
    pub no_cache: bool,
}

/// `push` and its `*-all-*` forms.
#[derive(Debug, Args, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    #[command(flatten)]
    pub common: Common,
    /// Build from nothing: no previous version as a cache source, and the engine's own cache unused
    #[arg(long)]
    pub no_cache: bool,
    /// Also point the remote :latest at each image's tag (the same manifest, stored again)
    #[arg(long, env = "DOCKER_PUSH_AS_LATEST", value_parser = clap::builder::FalseyValueParser::new())]
    pub push_as_latest: bool,
}

/// `push-manifest`: it only writes indexes.
#[derive(Debug, Args, Clone, Default, PartialEq, Eq)]
pub struct ManifestOptions {
    /// Print the indexes that would be published, after checking their members in the registry; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the indexes as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// The options of an engine command, resolved into what every command reads.
pub trait RunOptions {
    fn run_args(&self) -> RunArgs;
}

impl RunOptions for PlainOptions {
    fn run_args(&self) -> RunArgs {
        RunArgs::from(&self.common)
    }
}

impl RunOptions for LoadOptions {
    fn run_args(&self) -> RunArgs {
        RunArgs { skip_image_load: self.skip_image_load, no_cache: self.no_cache, ..RunArgs::from(&self.common) }
    }
}

impl RunOptions for BuildOptions {
    fn run_args(&self) -> RunArgs {
        RunArgs { no_cache: self.no_cache, ..RunArgs::from(&self.common) }
    }
}

impl RunOptions for PushOptions {
    fn run_args(&self) -> RunArgs {
        RunArgs { no_cache: self.no_cache, push_as_latest: self.push_as_latest, ..RunArgs::from(&self.common) }
    }
}

impl RunOptions for ManifestOptions {
    fn run_args(&self) -> RunArgs {
        RunArgs { dry_run: self.dry_run, json: self.json, ..RunArgs::default() }
    }
}

impl From<&Common> for RunArgs {
    fn from(c: &Common) -> RunArgs {
        RunArgs {
            jobs: c.jobs,
            keep_going: c.keep_going,
            dry_run: c.dry_run,
            json: c.json,
            quiet: c.quiet,
            verbose: c.verbose,
            ..RunArgs::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;
    use crate::catalog::shard::Shard;
    use crate::commands::listing::Field;
    use crate::config::{EngineKind, TagScheme, VARIABLES};
    use crate::model::Arch;

    const BIN: &str = "cargo xtask";

    /// Parses as `Cli::try_parse_from` does, less the settings' environment
    /// variables, so that the table means the same wherever it runs.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let cmd = Cli::command()
            .mut_args(|a| a.env(None))
            .mut_subcommands(|sub| sub.mut_args(|a| a.env(None)).mut_subcommands(|s| s.mut_args(|a| a.env(None))));
        let matches = cmd.try_get_matches_from(std::iter::once(BIN).chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    /// An engine command, from what it resolves to; options the command
    /// does not take must be off in `run`.
    fn eng(kind: &str, images: &[&str], run: RunArgs, shard: Option<Shard>) -> Command {
        let common = Common {
            jobs: run.jobs,
            keep_going: run.keep_going,
            dry_run: run.dry_run,
            json: run.json,
            quiet: run.quiet,
            verbose: run.verbose,
        };
        let images: Vec<String> = images.iter().map(|s| s.to_string()).collect();
        let load = LoadOptions { common: common.clone(), skip_image_load: run.skip_image_load, no_cache: run.no_cache };
        let build = BuildOptions { common: common.clone(), no_cache: run.no_cache };
        let push = PushOptions { common: common.clone(), no_cache: run.no_cache, push_as_latest: run.push_as_latest };
        let plain = PlainOptions { common };
        let command = match kind {
            "load" => Command::Load(Selected { images, opts: load }),
            "pull" => Command::Pull(Selected { images, opts: plain }),
            "rebuild" => Command::Rebuild(Selected { images, opts: build }),
            "tag" => Command::Tag(Selected { images, opts: plain }),
            "test" => Command::Test(Selected { images, opts: build }),
            "push" => Command::Push(Selected { images, opts: push }),
            "push-manifest" => Command::PushManifest(Selected {
                images,
                opts: ManifestOptions { dry_run: run.dry_run, json: run.json },
            }),
            "load-all-images" => Command::LoadAllImages(AllArgs { opts: load, shard, changed_since: None }),
            "load-all-test-images" => Command::LoadAllTestImages(AllArgs { opts: load, shard, changed_since: None }),
            "build-all-images" => Command::BuildAllImages(AllArgs { opts: build, shard, changed_since: None }),
            "push-all-images" => Command::PushAllImages(AllArgs { opts: push, shard, changed_since: None }),
            "push-all-test-images" => Command::PushAllTestImages(AllArgs { opts: push, shard, changed_since: None }),
            "test-all-test-images" => Command::TestAllTestImages(AllArgs { opts: build, shard, changed_since: None }),
            other => panic!("no engine command {other}"),
        };
        // The options a command does not take stay off.
        if let Some(resolved) = run_args_of(&command) {
            assert_eq!(resolved, run, "{kind} does not take every option of {run:?}");
        }
        command
    }

    fn run_args_of(c: &Command) -> Option<RunArgs> {
        Some(match c {
            Command::Load(s) => s.opts.run_args(),
            Command::Pull(s) | Command::Tag(s) => s.opts.run_args(),
            Command::Rebuild(s) | Command::Test(s) => s.opts.run_args(),
            Command::Push(s) => s.opts.run_args(),
            Command::PushManifest(s) => s.opts.run_args(),
            Command::LoadAllImages(a) | Command::LoadAllTestImages(a) => a.opts.run_args(),
            Command::BuildAllImages(a) | Command::TestAllTestImages(a) => a.opts.run_args(),
            Command::PushAllImages(a) | Command::PushAllTestImages(a) => a.opts.run_args(),
            _ => return None,
        })
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Command lines that parse, with the command and the global settings they
    /// parse to (compared whole, through their `Debug` form).
    #[test]
    fn valid_command_lines() {
        let none = Global::default;
        let set = |overrides: Overrides| Global { config: None, overrides };
        let strings = |xs: &[&str]| -> Vec<String> { xs.iter().map(|s| s.to_string()).collect() };
        let cases: Vec<(&[&str], Command, Global)> = vec![
            (
                &["list-all-images"],
                Command::ListAllImages(ListArgs { json: false, shard: None, changed_since: None }),
                none(),
            ),
            (
                &["list-all-images", "--json"],
                Command::ListAllImages(ListArgs { json: true, shard: None, changed_since: None }),
                none(),
            ),
            (
                &["list-all-test-images"],
                Command::ListAllTestImages(ListArgs { json: false, shard: None, changed_since: None }),
                none(),
            ),
            (
                &["list-all-test-images", "--json"],
                Command::ListAllTestImages(ListArgs { json: true, shard: None, changed_since: None }),
                none(),
            ),
            (
                &["--arch", "aarch64", "list-all-images"],
                Command::ListAllImages(ListArgs { json: false, shard: None, changed_since: None }),
                set(Overrides { arch: Some(Arch::Aarch64), ..Overrides::default() }),
            ),
            // Global settings go before or after the subcommand; the last one given wins.
            (
                &["--arch=x86_64", "list-all-images", "--json", "--arch=arm64", "--tag-scheme", "gvisor"],
                Command::ListAllImages(ListArgs { json: true, shard: None, changed_since: None }),
                set(Overrides {
                    arch: Some(Arch::Aarch64),
                    tag_scheme: Some(TagScheme::Gvisor),
                    ..Overrides::default()
                }),
            ),
            (
                &["local-image", "basic_hello", "basic/alpine", "basic"],
                Command::LocalImage { print: Field::Local, images: strings(&["basic_hello", "basic/alpine", "basic"]) },
                none(),
            ),
            (
                &["--images-dir", "imgs", "--config", "c.toml", "local-image", "x"],
                Command::LocalImage { print: Field::Local, images: strings(&["x"]) },
                Global {
                    config: Some("c.toml".into()),
                    overrides: Overrides { images_dir: Some("imgs".into()), ..Overrides::default() },
                },
            ),
            // Build arguments look like flags.
            (
                &["local-image", "x", "--build-args", "--build-arg X=1"],
                Command::LocalImage { print: Field::Local, images: strings(&["x"]) },
                set(Overrides { build_args: Some("--build-arg X=1".into()), ..Overrides::default() }),
            ),
            (
                &["--build-args=--build-arg X=1 --no-cache", "list-all-images"],
                Command::ListAllImages(ListArgs { json: false, shard: None, changed_since: None }),
                set(Overrides { build_args: Some("--build-arg X=1 --no-cache".into()), ..Overrides::default() }),
            ),
            (
                &[
                    "--remote-image-prefix",
                    "r.example:5000/x",
                    "--local-image-prefix=l.example/y",
                    "--non-test-images",
                    r"a\|b",
                    "--engine",
                    "podman",
                    "test-all-test-images",
                ],
                eng("test-all-test-images", &[], RunArgs::default(), None),
                set(Overrides {
                    remote_image_prefix: Some("r.example:5000/x".into()),
                    local_image_prefix: Some("l.example/y".into()),
                    non_test_images: Some(r"a\|b".into()),
                    engine: Some(EngineKind::Podman),
                    ..Overrides::default()
                }),
            ),
            (
                &["list-all-test-images", "--shard", "2/3"],
                Command::ListAllTestImages(ListArgs {
                    json: false,
                    shard: Some(Shard { index: 2, count: 3 }),
                    changed_since: None,
                }),
                none(),
            ),
            (
                &["local-image", "--print", "tag", "runtimes_go1.22"],
                Command::LocalImage { print: Field::Tag, images: strings(&["runtimes_go1.22"]) },
                none(),
            ),
            (
                &["local-image", "x", "y", "--print=dockerfile"],
                Command::LocalImage { print: Field::Dockerfile, images: strings(&["x", "y"]) },
                none(),
            ),
            (&["settings"], Command::Settings { names: vec![] }, none()),
            (
                &["settings", "REMOTE_IMAGE_PREFIX", "IMAGES_DIR"],
                Command::Settings { names: strings(&["REMOTE_IMAGE_PREFIX", "IMAGES_DIR"]) },
                none(),
            ),
            (
                &["init", "--from-makefile", "tools/images.mk"],
                Command::Init(InitArgs { from_makefile: "tools/images.mk".into(), force: false }),
                none(),
            ),
            (
                &["--config", "c.toml", "init", "--force", "--from-makefile=legacy.mk"],
                Command::Init(InitArgs { from_makefile: "legacy.mk".into(), force: true }),
                Global { config: Some("c.toml".into()), ..none() },
            ),
            (&["load", "basic"], eng("load", &["basic"], RunArgs::default(), None), none()),
            (
                &["load", "-j", "4", "--keep-going", "a", "--dry-run", "--json", "b"],
                eng(
                    "load",
                    &["a", "b"],
                    RunArgs { jobs: Some(4), keep_going: true, dry_run: true, json: true, ..RunArgs::default() },
                    None,
                ),
                none(),
            ),
            (&["build", "x"], eng("rebuild", &["x"], RunArgs::default(), None), none()),
            (
                &["rebuild", "x", "--no-cache", "-j1", "-q"],
                eng(
                    "rebuild",
                    &["x"],
                    RunArgs { jobs: Some(1), no_cache: true, quiet: true, ..RunArgs::default() },
                    None,
                ),
                none(),
            ),
            (
                &["load", "x", "--skip-image-load", "--no-cache", "-v"],
                eng(
                    "load",
                    &["x"],
                    RunArgs { skip_image_load: true, no_cache: true, verbose: true, ..RunArgs::default() },
                    None,
                ),
                none(),
            ),
            (&["pull", "basic/hello"], eng("pull", &["basic/hello"], RunArgs::default(), None), none()),
            (&["tag", "x", "y"], eng("tag", &["x", "y"], RunArgs::default(), None), none()),
            (&["test", "x"], eng("test", &["x"], RunArgs::default(), None), none()),
            (
                &["push", "x", "--push-as-latest"],
                eng("push", &["x"], RunArgs { push_as_latest: true, ..RunArgs::default() }, None),
                none(),
            ),
            (&["push-manifest", "x"], eng("push-manifest", &["x"], RunArgs::default(), None), none()),
            (&["load-all-images"], eng("load-all-images", &[], RunArgs::default(), None), none()),
            (
                &["load-all-test-images", "--dry-run"],
                eng("load-all-test-images", &[], RunArgs { dry_run: true, ..RunArgs::default() }, None),
                none(),
            ),
            (
                &["build-all-images", "--keep-going"],
                eng("build-all-images", &[], RunArgs { keep_going: true, ..RunArgs::default() }, None),
                none(),
            ),
            (&["push-all-images"], eng("push-all-images", &[], RunArgs::default(), None), none()),
            (
                &["push-all-test-images", "--shard", "2/4", "-j2"],
                eng(
                    "push-all-test-images",
                    &[],
                    RunArgs { jobs: Some(2), ..RunArgs::default() },
                    Some(Shard { index: 2, count: 4 }),
                ),
                none(),
            ),
            (&["prune"], Command::Prune(PruneArgs::default()), none()),
            (
                &["prune", "--dry-run", "--json", "--arch", "arm64"],
                Command::Prune(PruneArgs { dry_run: true, json: true, ..PruneArgs::default() }),
                set(Overrides { arch: Some(Arch::Aarch64), ..Overrides::default() }),
            ),
            (
                &["prune", "--other-prefixes", "localhost:5000/images", "old.example/x/", "--work-tree-only"],
                Command::Prune(PruneArgs {
                    work_tree_only: true,
                    other_prefixes: strings(&["localhost:5000/images", "old.example/x/"]),
                    ..PruneArgs::default()
                }),
                none(),
            ),
            (&["gc"], Command::Gc(GcArgs::default()), none()),
            (
                &["gc", "--keep", "HEAD~1", "HEAD", "--delete"],
                Command::Gc(GcArgs { keep: strings(&["HEAD~1", "HEAD"]), delete: true, ..GcArgs::default() }),
                none(),
            ),
            (
                &["gc", "--keep-since", "30d", "--keep", "HEAD~3..HEAD", "-j", "4", "--json"],
                Command::Gc(GcArgs {
                    keep: strings(&["HEAD~3..HEAD"]),
                    keep_since: Some(30 * 86_400),
                    json: true,
                    jobs: Some(4),
                    ..GcArgs::default()
                }),
                none(),
            ),
            (&["register-cross"], Command::RegisterCross, none()),
            (&["check"], Command::Check(CheckArgs { images: vec![], json: false, deny_warnings: false }), none()),
            (
                &["check", "basic", "--json", "--deny-warnings", "default"],
                Command::Check(CheckArgs { images: strings(&["basic", "default"]), json: true, deny_warnings: true }),
                none(),
            ),
            (
                &["status"],
                Command::Status(StatusArgs { images: vec![], local: false, bases: false, json: false, markdown: None }),
                none(),
            ),
            (
                &["status", "--local", "basic_hello", "--markdown", "summary.md", "--json"],
                Command::Status(StatusArgs {
                    images: strings(&["basic_hello"]),
                    local: true,
                    bases: false,
                    json: true,
                    markdown: Some("summary.md".into()),
                }),
                none(),
            ),
            (
                &["status", "--bases", "basic", "--json"],
                Command::Status(StatusArgs {
                    images: strings(&["basic"]),
                    local: false,
                    bases: true,
                    json: true,
                    markdown: None,
                }),
                none(),
            ),
            (&["pin"], Command::Pin(PinArgs { images: vec![], update: false, check: false, json: false }), none()),
            (
                &["pin", "basic", "--check", "--json", "default"],
                Command::Pin(PinArgs {
                    images: strings(&["basic", "default"]),
                    update: false,
                    check: true,
                    json: true,
                }),
                none(),
            ),
            (
                &["pin", "--update", "web/app"],
                Command::Pin(PinArgs { images: strings(&["web/app"]), update: true, check: false, json: false }),
                none(),
            ),
            (
                &["verify"],
                Command::Verify(VerifyArgs {
                    images: vec![],
                    test_images: false,
                    changed_since: None,
                    shard: None,
                    max_paths: 5,
                    json: false,
                    keep_going: false,
                    verbose: false,
                }),
                none(),
            ),
            (
                &["verify", "basic", "--json", "--max-paths", "2", "-v", "--keep-going", "web/app"],
                Command::Verify(VerifyArgs {
                    images: strings(&["basic", "web/app"]),
                    test_images: false,
                    changed_since: None,
                    shard: None,
                    max_paths: 2,
                    json: true,
                    keep_going: true,
                    verbose: true,
                }),
                none(),
            ),
            (
                &["verify", "--test-images", "--changed-since", "origin/main", "--shard", "2/3"],
                Command::Verify(VerifyArgs {
                    images: vec![],
                    test_images: true,
                    changed_since: Some("origin/main".into()),
                    shard: Some(Shard { index: 2, count: 3 }),
                    max_paths: 5,
                    json: false,
                    keep_going: false,
                    verbose: false,
                }),
                none(),
            ),
            (
                &["register-cross", "--arch", "aarch64"],
                Command::RegisterCross,
                set(Overrides { arch: Some(Arch::Aarch64), ..Overrides::default() }),
            ),
        ];
        for (args, command, global) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?} does not parse:\n{e}"));
            assert_eq!(format!("{:?}", cli.command), format!("{command:?}"), "{args:?}");
            assert_eq!(format!("{:?}", cli.global), format!("{global:?}"), "{args:?}");
        }
    }

    /// Command lines that do not parse, and how clap reports them.
    #[test]
    fn invalid_command_lines() {
        let cases: &[(&[&str], ErrorKind)] = &[
            (&[], ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand),
            (&["frobnicate"], ErrorKind::InvalidSubcommand),
            (&["list-all-image"], ErrorKind::InvalidSubcommand),
            (&["load-basic"], ErrorKind::InvalidSubcommand),
            (&["local-image"], ErrorKind::MissingRequiredArgument),
            (&["load"], ErrorKind::MissingRequiredArgument),
            (&["push", "--dry-run"], ErrorKind::MissingRequiredArgument),
            (&["list-all-images", "extra"], ErrorKind::UnknownArgument),
            (&["--json", "list-all-images"], ErrorKind::UnknownArgument),
            (&["list-all-images", "--jsn"], ErrorKind::UnknownArgument),
            (&["list-all-images", "--json", "--json"], ErrorKind::ArgumentConflict),
            (&["local-image", "--json", "x"], ErrorKind::UnknownArgument),
            (&["local-image", "x", "--shard", "1/2"], ErrorKind::UnknownArgument),
            (&["local-image", "--print", "tag"], ErrorKind::MissingRequiredArgument),
            (&["local-image", "--print", "colour", "x"], ErrorKind::ValueValidation),
            (&["local-image", "--print"], ErrorKind::InvalidValue),
            (&["list-all-images", "--shard", "3/2"], ErrorKind::ValueValidation),
            (&["settings", "--json"], ErrorKind::UnknownArgument),
            (&["init"], ErrorKind::MissingRequiredArgument),
            (&["init", "--from-makefile"], ErrorKind::InvalidValue),
            (&["init", "--from-makefile", "a.mk", "b.mk"], ErrorKind::UnknownArgument),
            (&["load", "x", "--shard", "1/2"], ErrorKind::UnknownArgument),
            (&["load-all-images", "x"], ErrorKind::UnknownArgument),
            (&["load", "x", "--changed-since", "HEAD"], ErrorKind::UnknownArgument),
            (&["prune", "x"], ErrorKind::UnknownArgument),
            (&["prune", "--delete"], ErrorKind::UnknownArgument),
            (&["prune", "--other-prefixes"], ErrorKind::InvalidValue),
            (&["prune", "--work-tree-only=yes"], ErrorKind::TooManyValues),
            (&["gc", "--keep-since", "30y"], ErrorKind::ValueValidation),
            (&["gc", "--keep"], ErrorKind::InvalidValue),
            (&["gc", "--dry-run"], ErrorKind::UnknownArgument),
            (&["list-all-images", "--changed-since"], ErrorKind::InvalidValue),
            (&["register-cross", "x"], ErrorKind::UnknownArgument),
            (&["check", "--shard", "1/2"], ErrorKind::UnknownArgument),
            (&["check", "--deny-warning"], ErrorKind::UnknownArgument),
            (&["status", "--markdown"], ErrorKind::InvalidValue),
            (&["pin", "--check", "--update"], ErrorKind::ArgumentConflict),
            (&["pin", "--dry-run"], ErrorKind::UnknownArgument),
            (&["pin", "--shard", "1/2"], ErrorKind::UnknownArgument),
            (&["status", "--dry-run"], ErrorKind::UnknownArgument),
            (&["list-all-images", "--arch"], ErrorKind::InvalidValue),
            (&["--arch", "sparc", "list-all-images"], ErrorKind::InvalidValue),
            (&["--tag-scheme", "sha", "list-all-images"], ErrorKind::InvalidValue),
            (&["load", "x", "--engine=containerd"], ErrorKind::InvalidValue),
            // Each command takes only the options that change what it does.
            (&["rebuild", "x", "--skip-image-load"], ErrorKind::UnknownArgument),
            (&["load", "x", "--push-as-latest"], ErrorKind::UnknownArgument),
            (&["pull", "x", "--no-cache"], ErrorKind::UnknownArgument),
            (&["tag", "x", "--push-as-latest"], ErrorKind::UnknownArgument),
            (&["push-manifest", "x", "-j", "2"], ErrorKind::UnknownArgument),
            (&["push-manifest", "x", "--keep-going"], ErrorKind::UnknownArgument),
            (&["build-all-images", "--skip-image-load"], ErrorKind::UnknownArgument),
            (&["load", "x", "--quiet", "--verbose"], ErrorKind::ArgumentConflict),
            (&["load", "x", "--arch=x86-64"], ErrorKind::InvalidValue),
            (&["load", "-j", "0", "x"], ErrorKind::ValueValidation),
            (&["load", "-j", "many", "x"], ErrorKind::ValueValidation),
            (&["load", "-j", "70000", "x"], ErrorKind::ValueValidation),
            (&["load-all-images", "--shard", "5/4"], ErrorKind::ValueValidation),
            (&["load-all-images", "--shard", "half"], ErrorKind::ValueValidation),
            (&["--help"], ErrorKind::DisplayHelp),
            (&["load", "--help"], ErrorKind::DisplayHelp),
            (&["help", "load"], ErrorKind::DisplayHelp),
            (&["load", "x", "--version"], ErrorKind::UnknownArgument),
            // A name that would read as an option.
            (&["load", "-rf"], ErrorKind::UnknownArgument),
            (&["load", "--", "-rf"], ErrorKind::ValueValidation),
            (&["push", "x", "--", "--help"], ErrorKind::ValueValidation),
            (&["local-image", "--", "-x"], ErrorKind::ValueValidation),
            (&["check", "--", "-"], ErrorKind::ValueValidation),
            (&["status", "--", "-x"], ErrorKind::ValueValidation),
            (&["verify", "--", "-x"], ErrorKind::ValueValidation),
            (&["verify", "--max-paths", "0"], ErrorKind::ValueValidation),
            (&["verify", "--max-paths"], ErrorKind::InvalidValue),
            (&["verify", "--dry-run"], ErrorKind::UnknownArgument),
            (&["verify", "--no-cache"], ErrorKind::UnknownArgument),
            (&["verify", "--shard", "3/2"], ErrorKind::ValueValidation),
        ];
        for (args, kind) in cases {
            // Unstripped too, except with no arguments at all: a setting in the
            // environment then turns clap's help into a plain missing-subcommand error.
            let plain =
                (!args.is_empty()).then(|| Cli::try_parse_from(std::iter::once(BIN).chain(args.iter().copied())));
            for result in std::iter::once(parse(args)).chain(plain) {
                match result {
                    Ok(cli) => panic!("{args:?} parses, as {cli:?}"),
                    Err(e) => assert_eq!(e.kind(), *kind, "{args:?}:\n{e}"),
                }
            }
        }
    }

    /// The flags read from the environment read the settings' variables,
    /// every one of them; `settings --help` names those it prints, in order.
    #[test]
    fn flags_read_the_settings_variables() {
        fn read(cmd: &clap::Command, out: &mut BTreeSet<String>) {
            out.extend(cmd.get_arguments().filter_map(|a| Some(a.get_env()?.to_string_lossy().into_owned())));
            for sub in cmd.get_subcommands() {
                read(sub, out);
            }
        }
        let cli = Cli::command();
        let mut flags = BTreeSet::new();
        read(&cli, &mut flags);
        let table: BTreeSet<String> = VARIABLES.iter().map(|v| v.name.to_string()).collect();
        assert_eq!(flags, table);

        let help = cli.find_subcommand("settings").and_then(|s| s.get_long_about()).unwrap().to_string();
        let at: Vec<Option<usize>> =
            VARIABLES.iter().filter(|v| v.value.is_some()).map(|v| help.find(&format!(" {}", v.name))).collect();
        assert!(at.iter().all(Option::is_some) && at.is_sorted(), "{help}");
    }

    /// `--version` (`-V`) prints the tool's name and version.
    #[test]
    fn version() {
        for flag in ["--version", "-V"] {
            let e = parse(&[flag]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayVersion);
            assert_eq!(e.render().to_string(), format!("cargo xtask {}\n", env!("CARGO_PKG_VERSION")));
        }
    }

    /// A name after `--` that would read as an option says why it is refused.
    #[test]
    fn names_that_read_as_options() {
        let e = parse(&["load", "--", "-rf"]).unwrap_err();
        assert_eq!(
            e.render().to_string(),
            "error: invalid value '-rf' for '<IMAGE>...': image names never start with `-`: give options before \
             `--`, names after it\n\n\
             For more information, try '--help'.\n"
        );
    }

    /// A mistyped subcommand gets a suggestion.
    #[test]
    fn suggestion_for_mistyped_subcommand() {
        let e = parse(&["register-crss"]).unwrap_err();
        assert_eq!(
            e.render().to_string(),
            "error: unrecognized subcommand 'register-crss'\n\n  \
             tip: a similar subcommand exists: 'register-cross'\n\n\
             Usage: cargo xtask [OPTIONS] <COMMAND>\n\n\
             For more information, try '--help'.\n"
        );
    }
}
