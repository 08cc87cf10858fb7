//! The `default` image's pins still resolve: its base is an exact tag (or a
//! digest) of the Debian release its apt sources name, and every package its
//! Dockerfile installs resolves, for each architecture the tool builds, from
//! exactly those sources. Needs `apt-get` and Debian's archive over the
//! network; no container engine. apt runs with a state of its own in a
//! temporary directory, so the host's apt configuration and state are neither
//! read nor changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's names for the architectures the tool builds (x86_64, aarch64).
const ARCHES: [&str; 2] = ["amd64", "arm64"];

fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/default")
}

/// The instructions of a Dockerfile as (keyword, arguments): comment lines
/// dropped, continued lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(rest) = line.strip_suffix('\\') {
            current.push_str(rest);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
        out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// One `apt-get` command of a RUN: its options and the words after them.
#[derive(Debug, Default, PartialEq)]
struct AptGet {
    options: Vec<String>,
    words: Vec<String>,
}

/// Every `apt-get` command in a shell line, up to the next `&&`, `||`, `;` or `|`.
fn apt_get_commands(shell: &str) -> Vec<AptGet> {
    let mut out = Vec::new();
    let mut current: Option<AptGet> = None;
    let mut takes_value = false;
    for word in shell.split_whitespace() {
        let (word, ends) = match word.strip_suffix(';') {
            _ if matches!(word, "&&" | "||" | ";" | "|") => ("", true),
            Some(w) => (w, true),
            None => (word, false),
        };
        if word.is_empty() {
        } else if let Some(cmd) = current.as_mut() {
            if takes_value {
                cmd.options.push(word.to_string());
                takes_value = false;
            } else if word.starts_with('-') {
                cmd.options.push(word.to_string());
                takes_value = matches!(word, "-o" | "--option" | "-t" | "--target-release" | "-c" | "--config-file");
            } else {
                cmd.words.push(word.to_string());
            }
        } else if word == "apt-get" {
            current = Some(AptGet::default());
        }
        if ends {
            out.extend(current.take());
            takes_value = false;
        }
    }
    out.extend(current);
    out
}

/// What the test needs to know of the Dockerfile.
#[derive(Debug)]
struct Image {
    /// The reference after `FROM`.
    base: String,
    /// Files of the image directory COPY'd into the image's `/etc/apt`:
    /// (source, path under `/etc/apt`).
    apt_files: Vec<(PathBuf, String)>,
    /// The options and packages of each `apt-get install`.
    installs: Vec<AptGet>,
    /// `-o` options given to any `apt-get`, which the build's resolution obeys too.
    apt_options: Vec<String>,
}

fn read_image(dir: &Path) -> Image {
    let path = dir.join("Dockerfile");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bases = Vec::new();
    let mut apt_files = Vec::new();
    let mut installs = Vec::new();
    let mut apt_options = Vec::new();
    for (keyword, args) in instructions(&text) {
        match keyword.as_str() {
            "FROM" => bases.extend(args.split_whitespace().find(|w| !w.starts_with("--")).map(str::to_string)),
            "COPY" | "ADD" => {
                let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
                let Some((dest, sources)) = words.split_last() else { continue };
                let Some(under) = dest.strip_prefix("/etc/apt/") else { continue };
                for source in sources {
                    let target = if under.ends_with('/') || sources.len() > 1 {
                        let file = Path::new(source).file_name().unwrap().to_string_lossy();
                        format!("{}/{file}", under.trim_end_matches('/'))
                    } else {
                        under.to_string()
                    };
                    apt_files.push((dir.join(source), target));
                }
            }
            "RUN" => {
                for cmd in apt_get_commands(&args) {
                    let mut options = cmd.options.iter();
                    while let Some(option) = options.next() {
                        if option == "-o" || option == "--option" {
                            apt_options.extend(options.next().cloned());
                        } else if let Some(value) = option.strip_prefix("--option=") {
                            apt_options.push(value.to_string());
                        }
                    }
                    if cmd.words.first().map(String::as_str) == Some("install") {
                        installs.push(cmd);
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(bases.len(), 1, "{}: expected one FROM, found {bases:?}", path.display());
    Image { base: bases.remove(0), apt_files, installs, apt_options }
}

/// The Debian release (`trixie`) that every suite in the sources belongs to.
fn codename(image: &Image) -> String {
    let mut suites = Vec::new();
    for (source, target) in &image.apt_files {
        if !target.starts_with("sources.list") {
            continue;
        }
        let text = fs::read_to_string(source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            if let Some(value) = line.strip_prefix("Suites:") {
                suites.extend(value.split_whitespace().map(str::to_string));
            } else if line.starts_with("deb ") || line.starts_with("deb-src ") {
                // One-line form: deb [options] uri suite components...
                let words: Vec<&str> = line.split_whitespace().filter(|w| !w.starts_with('[')).collect();
                suites.extend(words.get(2).map(|s| s.to_string()));
            }
        }
    }
    assert!(
        !suites.is_empty(),
        "the Dockerfile must COPY its apt sources into /etc/apt/sources.list.d/ so that the packages can be \
         checked against them; COPY'd into /etc/apt: {:?}",
        image.apt_files
    );
    let releases: Vec<&str> = suites.iter().map(|s| s.split(['-', '/']).next().unwrap()).collect();
    assert!(releases.iter().all(|r| *r == releases[0]), "the sources mix Debian releases: {suites:?}");
    releases[0].to_string()
}

/// The base is pinned: a tag naming an exact version (`1.95.0`) or date
/// (`20251117`) and the Debian release of the sources, or a digest.
fn check_base(base: &str, codename: &str) -> Result<(), String> {
    let (name, digest) = match base.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (base, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{base}: not a sha256 digest"));
        }
    }
    let last = name.rsplit('/').next().unwrap();
    let tag = last.split_once(':').map(|(_, tag)| tag).unwrap_or("");
    if tag.is_empty() || tag == "latest" {
        return Err(format!("{base}: the base needs an exact tag"));
    }
    let parts: Vec<&str> = tag.split('-').collect();
    if !parts.contains(&codename) {
        return Err(format!("{base}: the tag does not name {codename}, the Debian release the apt sources use"));
    }
    let exact_version = |p: &&str| {
        let numbers: Vec<&str> = p.split('.').collect();
        numbers.len() == 3 && numbers.iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let date = |p: &&str| p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit());
    if !parts.iter().any(|p| exact_version(p) || date(p)) {
        return Err(format!(
            "{base}: the tag names no exact version (1.95.0) or date (20251117); a tag like `1-slim` moves"
        ));
    }
    Ok(())
}

/// apt with a configuration, state and cache of its own under a temporary
/// directory; only the sources and apt settings the image COPYs are read.
struct Apt {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Apt {
    fn new(image: &Image) -> Apt {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::write(root.join("status"), "").unwrap();
        for (source, target) in &image.apt_files {
            let to = root.join("etc").join(target);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(source, &to).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        }
        let r = root.display();
        let config = root.join("apt.conf");
        fs::write(
            &config,
            format!(
                "Dir::Etc \"{r}/etc\";\n\
                 Dir::State \"{r}/state\";\n\
                 Dir::State::status \"{r}/status\";\n\
                 Dir::Cache \"{r}/cache\";\n\
                 APT::Update::Error-Mode \"any\";\n\
                 APT::Sandbox::User \"root\";\n\
                 Acquire::Languages \"none\";\n\
                 Acquire::Retries \"3\";\n\
                 Acquire::http::Timeout \"20\";\n"
            ),
        )
        .unwrap();
        Apt { _dir: dir, config }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new("apt-get");
        command.env("APT_CONFIG", &self.config).env("LC_ALL", "C").args(args);
        command.output().unwrap_or_else(|e| {
            panic!("cannot run apt-get ({e}): checking the default image's packages needs apt (Debian or Ubuntu)")
        })
    }

    /// Downloads the package lists the sources name; any failure fails the test.
    fn update(&self, options: &[String]) {
        let arches = format!("APT::Architectures={}", ARCHES.join(","));
        let native = format!("APT::Architecture={}", ARCHES[0]);
        let mut args: Vec<&str> = vec!["-o", &native, "-o", &arches];
        args.extend(options.iter().flat_map(|o| ["-o", o.as_str()]));
        args.push("update");
        let out = self.run(&args);
        assert!(out.status.success(), "apt-get update failed:\n{}", show(&out));
        // Error-Mode "any" makes a failed fetch fail; a warning is just as much a sign of trouble.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.lines().any(|l| l.starts_with("W:") || l.starts_with("E:")), "apt-get update:\n{}", show(&out));
    }

    /// Resolves an `apt-get install` for `arch` as the build would, from nothing
    /// installed. Returns each package apt would install, or apt's output when
    /// it cannot.
    fn resolve(&self, arch: &str, options: &[String], install: &AptGet) -> Result<Vec<Resolved>, String> {
        // Only `arch`, as in an image of that architecture.
        let native = format!("APT::Architecture={arch}");
        let all = format!("APT::Architectures={arch}");
        let mut args: Vec<&str> = vec!["-o", &native, "-o", &all];
        args.extend(options.iter().flat_map(|o| ["-o", o.as_str()]));
        args.extend(install.options.iter().map(String::as_str));
        args.push("--simulate");
        args.extend(install.words.iter().map(String::as_str));
        let out = self.run(&args);
        if !out.status.success() {
            return Err(show(&out));
        }
        // Inst libc6 (2.41-12+deb13u5 Debian:13.8/stable [arm64]) []
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout
            .lines()
            .filter_map(|l| l.strip_prefix("Inst "))
            .filter_map(|l| {
                let (name, rest) = l.split_once(" (")?;
                // Inside the parentheses: a line may end with more brackets (`[]`).
                let inside = rest.split_once(')')?.0;
                let version = inside.split_whitespace().next()?.to_string();
                let arch = inside.rsplit_once('[')?.1.trim_end_matches(']').to_string();
                Some(Resolved { name: name.to_string(), version, arch })
            })
            .collect())
    }
}

/// A package `apt-get install --simulate` would install.
#[derive(Debug)]
struct Resolved {
    name: String,
    version: String,
    arch: String,
}

fn show(out: &Output) -> String {
    format!("{}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Checks that every package an install asks for is among those apt would
/// install, for `arch`, at the version asked for where one is pinned.
fn check_resolved(arch: &str, install: &AptGet, resolved: &[Resolved]) -> Result<(), String> {
    for wanted in &install.words[1..] {
        let (name, version) = match wanted.split_once('=') {
            Some((name, version)) => (name, Some(version)),
            None => (wanted.as_str(), None),
        };
        let name = name.split(':').next().unwrap();
        match resolved.iter().find(|r| r.name == name) {
            None => return Err(format!("apt would not install {wanted}; it would install {resolved:?}")),
            Some(got) if version.is_some_and(|v| v != got.version) => {
                return Err(format!("{wanted} resolves to version {}", got.version))
            }
            Some(got) if got.arch != arch && got.arch != "all" => {
                return Err(format!("{wanted} resolves to a package for {}", got.arch))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[test]
fn base_is_an_exact_tag_of_the_release_the_apt_sources_name() {
    let image = read_image(&image_dir());
    if let Err(e) = check_base(&image.base, &codename(&image)) {
        panic!("images/default/Dockerfile: {e}");
    }
}

#[test]
fn packages_resolve_from_the_images_own_apt_sources() {
    let image = read_image(&image_dir());
    codename(&image);
    assert!(!image.installs.is_empty(), "the default Dockerfile installs no package: is it still parsed right?");
    for install in &image.installs {
        assert!(install.words.len() > 1, "`apt-get install` without packages: {install:?}");
    }
    let apt = Apt::new(&image);
    apt.update(&image.apt_options);
    let mut failures = Vec::new();
    for arch in ARCHES {
        for install in &image.installs {
            let checked =
                apt.resolve(arch, &image.apt_options, install).and_then(|got| check_resolved(arch, install, &got));
            if let Err(e) = checked {
                failures.push(format!("{arch}: apt-get {}:\n{e}", install.words.join(" ")));
            }
        }
    }
    assert!(failures.is_empty(), "the default image's packages no longer resolve:\n{}", failures.join("\n"));

    // The same check refuses a version the archive does not serve and a
    // package it does not have, so a pass above means something.
    for bad in ["make=0.0-0", "no-such-package-in-debian"] {
        let install =
            AptGet { options: vec!["--no-install-recommends".into()], words: vec!["install".into(), bad.into()] };
        let checked = apt.resolve(ARCHES[0], &image.apt_options, &install);
        assert!(checked.is_err(), "{bad} resolved: {checked:?}");
    }
}

#[test]
fn dockerfile_parsing() {
    let text = "# comment\nFROM --platform=$BUILDPLATFORM example/rust:1.2.3-slim-trixie AS build\n\
                COPY --chmod=644 a.sources /etc/apt/sources.list.d/\n\
                COPY snap.conf /etc/apt/apt.conf.d/10snap\n\
                RUN apt-get -o Acquire::Check-Valid-Until=false update \\\n\
                # inside\n\
                 && apt-get install -y --no-install-recommends \\\n      git=1:2 \\\n      make; \\\n    rm -rf x\n";
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), text).unwrap();
    let image = read_image(dir.path());
    assert_eq!(image.base, "example/rust:1.2.3-slim-trixie");
    assert_eq!(
        image.apt_files,
        [
            (dir.path().join("a.sources"), "sources.list.d/a.sources".to_string()),
            (dir.path().join("snap.conf"), "apt.conf.d/10snap".to_string())
        ]
    );
    assert_eq!(image.apt_options, ["Acquire::Check-Valid-Until=false"]);
    assert_eq!(
        image.installs,
        [AptGet {
            options: vec!["-y".into(), "--no-install-recommends".into()],
            words: vec!["install".into(), "git=1:2".into(), "make".into()]
        }]
    );

    for good in [
        "example/rust:1.2.3-slim-trixie".to_string(),
        "debian:trixie-20251117-slim".to_string(),
        format!("registry:5000/rust:1.2.3-slim-trixie@sha256:{}", "a".repeat(64)),
    ] {
        assert_eq!(check_base(&good, "trixie"), Ok(()), "{good}");
    }
    for bad in [
        "example/rust",
        "registry:5000/rust",
        "example/rust:latest",
        "example/rust:1-slim-trixie",
        "example/rust:1.2.3-slim-bookworm",
        "example/rust:1.2.3-slim-trixie@sha256:abc",
    ] {
        assert!(check_base(bad, "trixie").is_err(), "{bad} accepted");
    }
}
