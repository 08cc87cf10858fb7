//! The image catalog: discovery, both tag schemes, the listing commands and
//! their settings, bad input, and the legacy Makefile shim. The `gvisor` tags
//! and the discovery are checked against the legacy shell pipelines
//! themselves, run on generated trees full of awkward names.

use crate::common;
use crate::support::{clean_env, run};

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{json, Value};
use xtask::catalog::discovery::{discover, Image};
use xtask::config::Overrides;
use xtask::model::Arch;

const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

fn image(name: &str, path: &str, dockerfile: &str) -> Image {
    Image { name: name.into(), path: path.into(), dockerfile: dockerfile.into() }
}

/// Names whose tag differs between two listings of the same images.
fn changed(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    before.iter().filter(|(name, tag)| after[*name] != **tag).map(|(name, _)| name.clone()).collect()
}

// ---- gvisor scheme: bit for bit the legacy pipeline ----------------------------

mod gvisor {
    use super::*;

    /// Every image of a generated tree, under both architectures: the library's
    /// discovery and tags equal the legacy `find | sort -f -d | xargs sha256sum` ones.
    fn check_seed(seed: u64) {
        let (tree, shape) = awkward_tree(seed, true);
        assert!(shape.image_paths.len() >= 6 && shape.files >= 30 && shape.symlinks >= 6, "seed {seed}: {shape:?}");
        let oracle = legacy_tags_by_arch(&tree);
        let mut compared = BTreeSet::new();
        for (arch, want) in &oracle {
            let got = all_tags(&settings(&tree.root, arch, "gvisor"));
            assert_eq!(&got, want, "seed {seed}, {arch}");
            compared.extend(want.keys().map(|name| name.replace('_', "/")));
        }
        assert_eq!(compared.into_iter().collect::<Vec<_>>(), shape.image_paths, "seed {seed}");
    }

    /// The legacy tags of each architecture's images. The pipeline does not
    /// depend on the architecture, so each image is hashed once.
    fn legacy_tags_by_arch(tree: &Tree) -> Vec<(&'static str, BTreeMap<String, String>)> {
        let paths: Vec<(&str, Vec<String>)> = ARCHES.iter().map(|a| (*a, legacy_paths(&tree.root, a))).collect();
        let union: BTreeSet<String> = paths.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
        let tags = legacy_tags(&tree.root, &union.into_iter().collect::<Vec<_>>());
        paths
            .into_iter()
            .map(|(arch, p)| {
                (arch, p.iter().map(|p| p.replace('/', "_")).map(|n| (n.clone(), tags[&n].clone())).collect())
            })
            .collect()
    }

    #[test]
    fn legacy_tags_seed_1() {
        check_seed(1);
    }

    #[test]
    fn legacy_tags_seed_2() {
        check_seed(2);
    }

    #[test]
    fn legacy_tags_seed_3() {
        check_seed(3);
    }

    #[test]
    fn legacy_tags_seed_4() {
        check_seed(0x5eed_0004);
    }

    #[test]
    fn legacy_tags_seed_5() {
        check_seed(0xdead_beef);
    }

    #[test]
    fn legacy_tags_seed_6() {
        check_seed(u64::MAX - 6);
    }

    /// Ties under `sort -f -d` (same letters and digits, other case or
    /// punctuation) are broken by whole-line byte order; non-ASCII bytes are
    /// not part of the key.
    #[test]
    fn legacy_tags_with_sort_key_ties() {
        let tree = Tree::new();
        tree.write("ties/Dockerfile", "FROM scratch\n");
        for (n, name) in [
            "a", "A", "_a", "a_", ".a", "a.", "-a", "a-b", "a_b", "aB", "Ab", "ab", "é", "éa", "aé", "ß", "_", "__",
            "~", "1", "01", "1.0", "10",
        ]
        .iter()
        .enumerate()
        {
            tree.write(format!("ties/{name}"), format!("{n}\n"));
            tree.write(format!("ties/{name}.d/x"), format!("{n}\n"));
        }
        for arch in ARCHES {
            let want = legacy_tags(&tree.root, &["ties".to_string()]);
            assert_eq!(all_tags(&settings(&tree.root, arch, "gvisor")), want);
        }
    }

    /// The binary with `TAG_SCHEME=gvisor` prints the legacy tags.
    #[test]
    fn binary_prints_legacy_tags() {
        let (tree, _) = awkward_tree(7, false);
        for (arch, want) in legacy_tags_by_arch(&tree) {
            let rows =
                run(xtask(&tree).args(["list-all-images", "--json"]).env("TAG_SCHEME", "gvisor").env("ARCH", arch))
                    .json();
            let got: BTreeMap<String, String> = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["name"].as_str().unwrap().to_string(), r["tag"].as_str().unwrap().to_string()))
                .collect();
            assert_eq!(got, want, "{arch}");

            let names: Vec<&String> = want.keys().collect();
            let out = run(xtask(&tree).arg("local-image").args(&names).env("TAG_SCHEME", "gvisor").env("ARCH", arch));
            let lines: String = want
                .iter()
                .map(|(name, tag)| format!("gvisor.dev/images/{}:{tag}\n", name.replace('_', "/")))
                .collect();
            assert_eq!(out.ok(), lines, "{arch}");
        }
    }

    /// The image list equals the legacy discovery
    /// (`find . -name Dockerfile -o -name Dockerfile.$ARCH`, dirname, unique, `/` -> `_`),
    /// sorted by name, for both architectures.
    #[test]
    fn discovery_matches_legacy_find() {
        for seed in 10..15 {
            let (tree, _) = awkward_tree(seed, false);
            for arch in ARCHES {
                let mut want: Vec<String> =
                    legacy_paths(&tree.root, arch).iter().map(|p| p.replace('/', "_")).collect();
                want.sort();
                assert_eq!(names(&tree.root, arch), want, "seed {seed}, {arch}");
                let listed = run(xtask(&tree).arg("list-all-images").env("ARCH", arch));
                assert_eq!(
                    listed.ok(),
                    want.iter().map(|n| format!("{n}\n")).collect::<String>(),
                    "seed {seed}, {arch}"
                );
            }
        }
    }
}

// ---- content scheme --------------------------------------------------------------

mod content {
    use super::*;

    /// `app/web` is built FROM the local image `base/os`; `app/cli` and `plain` stand alone.
    fn fixture() -> Tree {
        let t = Tree::new();
        t.write("base/os/Dockerfile", "FROM scratch\nCOPY os-release /etc/\n")
            .write("base/os/os-release", "ID=test\n")
            .write("app/web/Dockerfile", "FROM gvisor.dev/images/base/os:latest\nCOPY . /srv\n")
            .write("app/web/index.html", "<p>hello</p>\n")
            .write("app/web/.dockerignore", "# build output\n*.log\ncache\n")
            .write("app/cli/Dockerfile", "FROM scratch\nCOPY tool /bin/\n")
            .write("app/cli/tool", "#!/bin/sh\necho tool\n")
            .write("app/cli/other", "#!/bin/sh\necho other\n")
            .symlink("tool", "app/cli/link")
            .write("plain/Dockerfile", "FROM scratch\n");
        t
    }

    fn tags(tree: &Tree) -> BTreeMap<String, String> {
        all_tags(&settings(&tree.root, "x86_64", "content"))
    }

    #[test]
    fn executable_bit_changes_tag() {
        let tree = fixture();
        let before = tags(&tree);
        tree.chmod("app/cli/other", 0o755);
        let after = tags(&tree);
        assert_eq!(changed(&before, &after), ["app_cli"]);
        // Other permission bits are not inputs of the build; the tag comes back.
        tree.chmod("app/cli/other", 0o600);
        assert_eq!(tags(&tree), before);
    }

    #[test]
    fn symlink_target_changes_tag() {
        let tree = fixture();
        let before = tags(&tree);
        tree.remove("app/cli/link").symlink("other", "app/cli/link");
        assert_eq!(changed(&before, &tags(&tree)), ["app_cli"]);
    }

    #[test]
    fn symlink_replaced_by_its_target_changes_tag() {
        let tree = fixture();
        let before = tags(&tree);
        tree.remove("app/cli/link").write("app/cli/link", "#!/bin/sh\necho tool\n");
        assert_eq!(changed(&before, &tags(&tree)), ["app_cli"]);
    }

    #[test]
    fn dockerignored_changes_keep_tag() {
        let tree = fixture();
        let before = tags(&tree);
        tree.write("app/web/debug.log", "one\n").write("app/web/cache/blob", "x").mkdir("app/web/cache/empty");
        assert_eq!(tags(&tree), before);
        tree.write("app/web/debug.log", "two\n").chmod("app/web/debug.log", 0o755).write("app/web/cache/blob", "y");
        assert_eq!(tags(&tree), before);
    }

    #[test]
    fn included_change_changes_tag() {
        let tree = fixture();
        let before = tags(&tree);
        tree.write("app/web/index.html", "<p>hello!</p>\n");
        let edited = tags(&tree);
        assert_eq!(changed(&before, &edited), ["app_web"]);
        // Not excluded: `*.log` is anchored at the context root.
        tree.write("app/web/logs/debug.log", "one\n");
        assert_eq!(changed(&edited, &tags(&tree)), ["app_web"]);
    }

    #[test]
    fn renamed_file_changes_tag() {
        let tree = fixture();
        let before = tags(&tree);
        std::fs::rename(tree.path("app/web/index.html"), tree.path("app/web/index.htm")).unwrap();
        assert_eq!(changed(&before, &tags(&tree)), ["app_web"]);
    }

    #[test]
    fn dockerfile_change_changes_tag() {
        let tree = fixture();
        let before = tags(&tree);
        tree.write("plain/Dockerfile", "FROM scratch\nLABEL x=1\n");
        assert_eq!(changed(&before, &tags(&tree)), ["plain"]);
    }

    #[test]
    fn empty_directory_changes_tag() {
        let tree = fixture();
        let before = tags(&tree);
        tree.mkdir("app/cli/empty");
        assert_eq!(changed(&before, &tags(&tree)), ["app_cli"]);
    }

    #[test]
    fn build_args_change_tag() {
        let tree = fixture();
        let with = |args: Option<&str>| {
            all_tags(&resolve(
                &tree.root,
                Overrides { build_args: args.map(String::from), ..overrides(&tree.root, "x86_64", "content") },
            ))
        };
        let none = with(None);
        let one = with(Some("--build-arg X=1"));
        let two = with(Some("--build-arg X=2"));
        let all: Vec<String> = none.keys().cloned().collect();
        assert_eq!(changed(&none, &one), all);
        assert_eq!(changed(&one, &two), all);
        // The arguments are split on whitespace, as the engine receives them.
        assert_eq!(with(Some("  --build-arg\tX=1 ")), one);
        assert_eq!(with(Some("")), none);

        // DOCKER_BUILD_ARGS and --build-args reach the tags the same way.
        let listed = |cmd: &mut std::process::Command| -> BTreeMap<String, String> {
            let rows = run(cmd.args(["list-all-images", "--json"]).env("ARCH", "x86_64")).json();
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| (r["name"].as_str().unwrap().to_string(), r["tag"].as_str().unwrap().to_string()))
                .collect()
        };
        assert_eq!(listed(&mut xtask(&tree)), none);
        assert_eq!(listed(xtask(&tree).env("DOCKER_BUILD_ARGS", "--build-arg X=1")), one);
        assert_eq!(listed(xtask(&tree).arg("--build-args=--build-arg X=2")), two);
        assert_eq!(
            listed(xtask(&tree).env("DOCKER_BUILD_ARGS", "--build-arg X=1").args(["--build-args", "--build-arg X=2"])),
            two
        );
    }

    #[test]
    fn arch_changes_tag() {
        let tree = fixture();
        let x86 = all_tags(&settings(&tree.root, "x86_64", "content"));
        let arm = all_tags(&settings(&tree.root, "aarch64", "content"));
        assert_eq!(changed(&x86, &arm), x86.keys().cloned().collect::<Vec<_>>());
        assert_ne!(content_tag(&tree.root, "x86_64", "plain"), content_tag(&tree.root, "aarch64", "plain"));
        // Spellings of one architecture are one architecture.
        assert_eq!(all_tags(&settings(&tree.root, "amd64", "content")), x86);
        assert_eq!(all_tags(&settings(&tree.root, "arm64", "content")), arm);
    }

    #[test]
    fn base_change_changes_dependents() {
        let tree = fixture();
        let before = tags(&tree);
        tree.write("base/os/os-release", "ID=changed\n");
        assert_eq!(changed(&before, &tags(&tree)), ["app_web", "base_os"]);
    }

    /// A base is found whatever tag or digest the FROM line names, and through
    /// `--platform` and a stage name.
    #[test]
    fn base_found_in_every_from_form() {
        for from in [
            "FROM gvisor.dev/images/base/os",
            "FROM gvisor.dev/images/base/os:other AS build",
            "from --platform=linux/arm64 gvisor.dev/images/base/os@sha256:0000",
            "FROM scratch AS a\nFROM gvisor.dev/images/base/os:latest",
        ] {
            let tree = fixture();
            tree.write("app/web/Dockerfile", format!("{from}\nCOPY . /srv\n"));
            let before = tags(&tree);
            tree.write("base/os/os-release", "ID=changed\n");
            assert_eq!(changed(&before, &tags(&tree)), ["app_web", "base_os"], "{from}");
        }
    }

    #[test]
    fn same_tree_elsewhere_same_tags() {
        let tree = fixture();
        let copy = copy_tree(&tree);
        assert_eq!(tags(&copy), tags(&tree));
        for seed in [21, 22] {
            let (tree, _) = awkward_tree(seed, false);
            let copy = copy_tree(&tree);
            for arch in ARCHES {
                let here = all_tags(&settings(&tree.root, arch, "content"));
                assert_eq!(all_tags(&settings(&copy.root, arch, "content")), here, "seed {seed}, {arch}");
            }
        }
    }

    #[test]
    fn locale_does_not_change_tags() {
        let (tree, _) = awkward_tree(23, false);
        for scheme in ["content", "gvisor"] {
            let listing = |locale: &[(&str, &str)]| {
                let mut cmd = xtask(&tree);
                cmd.args(["list-all-images", "--json"]).env("TAG_SCHEME", scheme).env("ARCH", "x86_64");
                cmd.envs(locale.iter().copied());
                run(&mut cmd).ok().to_string()
            };
            let c = listing(&[("LC_ALL", "C")]);
            assert_eq!(listing(&[("LC_ALL", "C.UTF-8")]), c, "{scheme}");
            assert_eq!(listing(&[("LANG", "C.UTF-8"), ("LC_COLLATE", "C.UTF-8")]), c, "{scheme}");
            assert_eq!(listing(&[]), c, "{scheme}");
        }
    }

    #[test]
    fn tags_are_16_lower_case_hex() {
        let (tree, shape) = awkward_tree(24, false);
        for arch in ARCHES {
            for scheme in ["content", "gvisor"] {
                let tags = all_tags(&settings(&tree.root, arch, scheme));
                assert!(tags.len() >= 4, "{tags:?}");
                tags.values().for_each(|t| assert_tag_format(t));
                let distinct: BTreeSet<&String> = tags.values().collect();
                assert_eq!(distinct.len(), tags.len(), "{arch} {scheme}: {tags:?}");
            }
        }
        assert!(shape.image_paths.len() >= 6);
    }

    /// Pins the scheme: a change to what is hashed, or how, must come with a
    /// new `CONTENT_SCHEME_VERSION` (which changes this tag too).
    #[test]
    fn content_tag_is_stable() {
        let tree = fixture();
        assert_eq!(xtask::catalog::tagging::CONTENT_SCHEME_VERSION, "xtask-content-v2");
        let want = BTreeMap::from([
            ("app_cli".to_string(), "d3f7d7a2d43119cd".to_string()),
            ("app_web".to_string(), "77d51cd7d86e475c".to_string()),
            ("base_os".to_string(), "7922264853c0fc30".to_string()),
            ("plain".to_string(), "9fb26a90fa007da9".to_string()),
        ]);
        assert_eq!(tags(&tree), want);
    }

    #[test]
    fn fifo_excluded_by_dockerignore_is_allowed() {
        let tree = fixture();
        let before = tags(&tree);
        tree.mkfifo("app/web/cache/pipe").mkfifo("app/web/pipe.log");
        assert_eq!(tags(&tree), before);
    }

    /// The gvisor scheme keeps the legacy blind spots: modes, symlinks and
    /// empty directories do not change its tags.
    #[test]
    fn gvisor_scheme_ignores_what_legacy_ignored() {
        let tree = fixture();
        let gvisor = || all_tags(&settings(&tree.root, "x86_64", "gvisor"));
        let before = gvisor();
        tree.chmod("app/cli/other", 0o755)
            .remove("app/cli/link")
            .symlink("other", "app/cli/link")
            .mkdir("app/cli/empty");
        tree.write("base/os/os-release", "ID=changed\n");
        assert_eq!(changed(&before, &gvisor()), ["base_os"]);
    }
}

// ---- discovery ---------------------------------------------------------------------

mod discovery {
    use super::*;

    fn catalog(tree: &Tree, arch: &str) -> (Vec<Image>, Vec<Image>) {
        let c = discover(&tree.root, arch.parse().unwrap()).unwrap();
        assert_eq!(c.arch, arch.parse::<Arch>().unwrap());
        (c.images, c.other_arch)
    }

    #[test]
    fn arch_dockerfile_wins_over_plain() {
        let tree = Tree::new();
        tree.write("both/Dockerfile", "FROM scratch\n")
            .write("both/Dockerfile.x86_64", "FROM scratch\n")
            .write("all/Dockerfile", "")
            .write("all/Dockerfile.x86_64", "")
            .write("all/Dockerfile.aarch64", "");
        assert_eq!(
            catalog(&tree, "x86_64"),
            (vec![image("all", "all", "Dockerfile.x86_64"), image("both", "both", "Dockerfile.x86_64")], vec![])
        );
        assert_eq!(
            catalog(&tree, "aarch64"),
            (vec![image("all", "all", "Dockerfile.aarch64"), image("both", "both", "Dockerfile")], vec![])
        );
        let rows = run(xtask(&tree).args(["--arch", "x86_64", "list-all-images", "--json"])).json();
        let dockerfiles: Vec<&Value> = rows.as_array().unwrap().iter().map(|r| &r["dockerfile"]).collect();
        assert_eq!(dockerfiles, [&json!("Dockerfile.x86_64"), &json!("Dockerfile.x86_64")]);
    }

    #[test]
    fn other_arch_only_is_not_an_image() {
        let tree = Tree::new();
        tree.write("x86/Dockerfile.x86_64", "").write("arm/Dockerfile.aarch64", "").write("any/Dockerfile", "");
        assert_eq!(
            catalog(&tree, "x86_64"),
            (
                vec![image("any", "any", "Dockerfile"), image("x86", "x86", "Dockerfile.x86_64")],
                vec![image("arm", "arm", "Dockerfile")]
            )
        );
        assert_eq!(
            catalog(&tree, "aarch64"),
            (
                vec![image("any", "any", "Dockerfile"), image("arm", "arm", "Dockerfile.aarch64")],
                vec![image("x86", "x86", "Dockerfile")]
            )
        );
    }

    #[test]
    fn foreign_suffixes_do_not_make_images() {
        let tree = Tree::new();
        tree.write("llm/Dockerfile.llama-2-7b", "")
            .write("llm/Dockerfile.x86_64.bak", "")
            .write("llm/Dockerfile.amd64", "")
            .write("llm/Dockerfile.arm64", "")
            .write("llm/dockerfile", "")
            .write("llm/Containerfile", "")
            .write("llm/served/Dockerfile", "")
            .write("llm/served/Dockerfile.llama-2-7b", "");
        for arch in ARCHES {
            assert_eq!(catalog(&tree, arch), (vec![image("llm_served", "llm/served", "Dockerfile")], vec![]), "{arch}");
        }
    }

    #[test]
    fn nested_images_and_names_from_paths() {
        let tree = Tree::new();
        tree.write("gpu/ollama/Dockerfile", "")
            .write("gpu/ollama/bench/Dockerfile", "")
            .write("gpu/ollama/bench/deep.er/x-1/Dockerfile.aarch64", "")
            .write("gpu/ollama/models/readme", "")
            .write("gpu/cuda-12.2/Dockerfile", "")
            .write("a0/Dockerfile", "")
            .write("a/b/Dockerfile", "")
            .write("3.12/Dockerfile", "");
        let want = vec![
            image("3.12", "3.12", "Dockerfile"),
            image("a0", "a0", "Dockerfile"),
            image("a_b", "a/b", "Dockerfile"),
            image("gpu_cuda-12.2", "gpu/cuda-12.2", "Dockerfile"),
            image("gpu_ollama", "gpu/ollama", "Dockerfile"),
            image("gpu_ollama_bench", "gpu/ollama/bench", "Dockerfile"),
        ];
        assert_eq!(
            catalog(&tree, "x86_64"),
            (want.clone(), vec![image("gpu_ollama_bench_deep.er_x-1", "gpu/ollama/bench/deep.er/x-1", "Dockerfile")])
        );
        let mut arm = want;
        arm.push(image("gpu_ollama_bench_deep.er_x-1", "gpu/ollama/bench/deep.er/x-1", "Dockerfile.aarch64"));
        assert_eq!(catalog(&tree, "aarch64"), (arm, vec![]));
        assert_eq!(
            run(xtask(&tree).args(["list-all-images", "--arch=x86_64"])).ok(),
            "3.12\na0\na_b\ngpu_cuda-12.2\ngpu_ollama\ngpu_ollama_bench\n"
        );
        let groups: Vec<String> =
            discover(&tree.root, Arch::Aarch64).unwrap().images.iter().map(|i| i.group().to_string()).collect();
        assert_eq!(groups, ["3.12", "a0", "a", "gpu", "gpu", "gpu", "gpu"]);
    }

    /// The parent's build context holds the nested image's directory.
    #[test]
    fn nested_image_is_in_parents_context() {
        let tree = Tree::new();
        tree.write("gpu/ollama/Dockerfile", "")
            .write("gpu/ollama/bench/Dockerfile", "")
            .write("gpu/ollama/bench/run", "a");
        for scheme in ["content", "gvisor"] {
            let before = all_tags(&settings(&tree.root, "x86_64", scheme));
            tree.write("gpu/ollama/bench/run", scheme);
            let after = all_tags(&settings(&tree.root, "x86_64", scheme));
            assert_eq!(changed(&before, &after), ["gpu_ollama", "gpu_ollama_bench"], "{scheme}");
        }
    }

    #[test]
    fn symlinked_directories_are_not_followed() {
        let tree = Tree::new();
        tree.write("real/inner/Dockerfile", "").symlink("real", "linked").symlink("../real/inner", "real/alias");
        assert_eq!(catalog(&tree, "x86_64"), (vec![image("real_inner", "real/inner", "Dockerfile")], vec![]));
    }

    /// A symlinked images root is followed (only the root).
    #[test]
    fn symlinked_root_is_followed() {
        let tree = Tree::new();
        tree.write("basic/hello/Dockerfile", "");
        let link = tree.base().join("link");
        std::os::unix::fs::symlink(&tree.root, &link).unwrap();
        assert_eq!(names(&link, "x86_64"), ["basic_hello"]);
        assert_eq!(
            all_tags(&settings(&link, "x86_64", "content")),
            all_tags(&settings(&tree.root, "x86_64", "content"))
        );
    }

    fn groups_tree() -> Tree {
        let t = Tree::new();
        t.write("basic/hello/Dockerfile", "")
            .write("basic/alpine/Dockerfile", "")
            .write("basic/alpine/edge/Dockerfile", "")
            .write("basicx/Dockerfile", "")
            .write("default/Dockerfile", "")
            .write("platform/Dockerfile.x86_64", "");
        t
    }

    #[test]
    fn groups_select_every_member() {
        let tree = groups_tree();
        let c = discover(&tree.root, Arch::X86_64).unwrap();
        let select = |args: &[&str]| -> Vec<String> {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            c.select(&args).unwrap().into_iter().map(|i| c[i].name.clone()).collect()
        };
        assert_eq!(select(&["basic"]), ["basic_alpine", "basic_alpine_edge", "basic_hello"]);
        assert_eq!(select(&["basicx"]), ["basicx"]);
        assert_eq!(select(&["basic/hello", "default", "basic_hello"]), ["basic_hello", "default"]);
        assert_eq!(select(&["platform", "basic_alpine"]), ["basic_alpine", "platform"]);

        let tags = all_tags(&settings(&tree.root, "x86_64", "content"));
        let out = run(xtask(&tree).args(["local-image", "basic"]).env("ARCH", "x86_64"));
        assert_eq!(
            out.ok(),
            format!(
                "gvisor.dev/images/basic/alpine:{}\ngvisor.dev/images/basic/alpine/edge:{}\ngvisor.dev/images/basic/hello:{}\n",
                tags["basic_alpine"], tags["basic_alpine_edge"], tags["basic_hello"]
            )
        );
        let out = run(xtask(&tree).args(["local-image", "default", "basic/hello", "default"]).env("ARCH", "x86_64"));
        assert_eq!(
            out.ok(),
            format!(
                "gvisor.dev/images/basic/hello:{}\ngvisor.dev/images/default:{}\n",
                tags["basic_hello"], tags["default"]
            )
        );
    }

    #[test]
    fn test_images_leave_out_non_test_list() {
        let tree = groups_tree();
        let list = |cmd: &mut std::process::Command| {
            run(cmd.arg("list-all-test-images").env("ARCH", "x86_64")).ok().to_string()
        };
        assert_eq!(
            list(&mut xtask(&tree)),
            "basic_alpine\nbasic_alpine_edge\nbasic_hello\nbasicx\ndefault\nplatform\n"
        );
        // An entry matches where it occurs in the path or the name.
        assert_eq!(
            list(xtask(&tree).env("NON_TEST_IMAGES", r"default\|alpine/e\|hello")),
            "basic_alpine\nbasicx\nplatform\n"
        );
        assert_eq!(list(xtask(&tree).env("NON_TEST_IMAGES", r"basic_alpine\|form")), "basic_hello\nbasicx\ndefault\n");
        assert_eq!(list(xtask(&tree).env("NON_TEST_IMAGES", "basic")), "default\nplatform\n");
        assert_eq!(
            list(xtask(&tree).args(["--non-test-images", "basicx"]).env("NON_TEST_IMAGES", "basic")),
            "basic_alpine\nbasic_alpine_edge\nbasic_hello\ndefault\nplatform\n"
        );
        // From the settings file, and the environment over the file.
        let config = tree.config("non_test_images = [\"default\", \"platform\"]\n");
        assert_eq!(
            list(xtask(&tree).env("IMAGES_CONFIG", &config)),
            "basic_alpine\nbasic_alpine_edge\nbasic_hello\nbasicx\n"
        );
        assert_eq!(
            list(xtask(&tree).env("IMAGES_CONFIG", &config).env("NON_TEST_IMAGES", "hello")),
            "basic_alpine\nbasic_alpine_edge\nbasicx\ndefault\nplatform\n"
        );
        // `list-all-images` lists them all anyway.
        let all = run(xtask(&tree).arg("list-all-images").env("ARCH", "x86_64").env("NON_TEST_IMAGES", "basic"));
        assert_eq!(all.ok(), "basic_alpine\nbasic_alpine_edge\nbasic_hello\nbasicx\ndefault\nplatform\n");

        let rows = run(xtask(&tree)
            .args(["list-all-images", "--json"])
            .env("ARCH", "x86_64")
            .env("NON_TEST_IMAGES", r"default\|alpine/e"))
        .json();
        let test: Vec<(&str, bool)> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap(), r["test"].as_bool().unwrap()))
            .collect();
        assert_eq!(
            test,
            [
                ("basic_alpine", true),
                ("basic_alpine_edge", false),
                ("basic_hello", true),
                ("basicx", true),
                ("default", false),
                ("platform", true)
            ]
        );
        let rows = run(xtask(&tree)
            .args(["list-all-test-images", "--json"])
            .env("ARCH", "x86_64")
            .env("NON_TEST_IMAGES", r"default\|alpine/e"))
        .json();
        let names: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["basic_alpine", "basic_hello", "basicx", "platform"]);
    }
}

// ---- --json and the settings that shape it ---------------------------------------------

mod json_output {
    use super::*;

    fn tree() -> Tree {
        let t = Tree::new();
        t.write("basic/hello/Dockerfile", "FROM scratch\nCOPY hello.txt /\n")
            .write("basic/hello/hello.txt", "hello\n")
            .write("basic/alpine/Dockerfile", "FROM alpine\n")
            .write("basic/alpine/Dockerfile.aarch64", "FROM arm64v8/alpine\n")
            .write("default/Dockerfile", "FROM gvisor.dev/images/basic/hello:latest\n")
            .write("platform/Dockerfile.x86_64", "FROM scratch\n");
        t
    }

    fn rows(cmd: &mut std::process::Command) -> Vec<Value> {
        run(cmd).json().as_array().unwrap().clone()
    }

    fn field<'a>(rows: &'a [Value], key: &str) -> Vec<&'a str> {
        rows.iter().map(|r| r[key].as_str().unwrap()).collect()
    }

    #[test]
    fn every_key_x86_64() {
        let tree = tree();
        let t = all_tags(&settings(&tree.root, "x86_64", "content"));
        let got = rows(
            xtask(&tree)
                .args(["list-all-images", "--json"])
                .env("ARCH", "x86_64")
                .env("NON_TEST_IMAGES", r"default\|basic/alp"),
        );
        let want = vec![
            json!({"name": "basic_alpine", "path": "basic/alpine", "dockerfile": "Dockerfile", "group": "basic", "arch": "x86_64",
                   "tag": t["basic_alpine"], "local": format!("gvisor.dev/images/basic/alpine:{}", t["basic_alpine"]),
                   "remote": format!("localhost:5000/images/basic/alpine_x86_64:{}", t["basic_alpine"]), "test": false}),
            json!({"name": "basic_hello", "path": "basic/hello", "dockerfile": "Dockerfile", "group": "basic", "arch": "x86_64",
                   "tag": t["basic_hello"], "local": format!("gvisor.dev/images/basic/hello:{}", t["basic_hello"]),
                   "remote": format!("localhost:5000/images/basic/hello_x86_64:{}", t["basic_hello"]), "test": true}),
            json!({"name": "default", "path": "default", "dockerfile": "Dockerfile", "group": "default", "arch": "x86_64",
                   "tag": t["default"], "local": format!("gvisor.dev/images/default:{}", t["default"]),
                   "remote": format!("localhost:5000/images/default_x86_64:{}", t["default"]), "test": false}),
            json!({"name": "platform", "path": "platform", "dockerfile": "Dockerfile.x86_64", "group": "platform", "arch": "x86_64",
                   "tag": t["platform"], "local": format!("gvisor.dev/images/platform:{}", t["platform"]),
                   "remote": format!("localhost:5000/images/platform_x86_64:{}", t["platform"]), "test": true}),
        ];
        assert_eq!(got, want);
        t.values().for_each(|tag| assert_tag_format(tag));
    }

    #[test]
    fn every_key_aarch64_gvisor() {
        let tree = tree();
        let t = legacy_tags(&tree.root, &["basic/alpine".into(), "basic/hello".into(), "default".into()]);
        let got = rows(
            xtask(&tree)
                .args(["list-all-images", "--json"])
                .env("ARCH", "arm64")
                .env("TAG_SCHEME", "gvisor")
                .env("REMOTE_IMAGE_PREFIX", "registry.example:5000/cache/")
                .env("LOCAL_IMAGE_PREFIX", "example.org/img")
                .env("NON_TEST_IMAGES", "hello"),
        );
        let want = vec![
            json!({"name": "basic_alpine", "path": "basic/alpine", "dockerfile": "Dockerfile.aarch64", "group": "basic", "arch": "aarch64",
                   "tag": t["basic_alpine"], "local": format!("example.org/img/basic/alpine:{}", t["basic_alpine"]),
                   "remote": format!("registry.example:5000/cache/basic/alpine_aarch64:{}", t["basic_alpine"]), "test": true}),
            json!({"name": "basic_hello", "path": "basic/hello", "dockerfile": "Dockerfile", "group": "basic", "arch": "aarch64",
                   "tag": t["basic_hello"], "local": format!("example.org/img/basic/hello:{}", t["basic_hello"]),
                   "remote": format!("registry.example:5000/cache/basic/hello_aarch64:{}", t["basic_hello"]), "test": false}),
            json!({"name": "default", "path": "default", "dockerfile": "Dockerfile", "group": "default", "arch": "aarch64",
                   "tag": t["default"], "local": format!("example.org/img/default:{}", t["default"]),
                   "remote": format!("registry.example:5000/cache/default_aarch64:{}", t["default"]), "test": true}),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn test_images_json_is_the_test_rows() {
        let tree = tree();
        let all = rows(
            xtask(&tree)
                .args(["list-all-images", "--json"])
                .env("ARCH", "x86_64")
                .env("NON_TEST_IMAGES", r"default\|alpine"),
        );
        let tests = rows(
            xtask(&tree)
                .args(["list-all-test-images", "--json"])
                .env("ARCH", "x86_64")
                .env("NON_TEST_IMAGES", r"default\|alpine"),
        );
        let want: Vec<Value> = all.into_iter().filter(|r| r["test"] == json!(true)).collect();
        assert_eq!(field(&want, "name"), ["basic_hello", "platform"]);
        assert_eq!(tests, want);
    }

    #[test]
    fn arch_spellings() {
        let tree = tree();
        for (given, arch) in [("x86_64", "x86_64"), ("amd64", "x86_64"), ("aarch64", "aarch64"), ("arm64", "aarch64")] {
            let t = all_tags(&settings(&tree.root, arch, "content"));
            let mut by_env = xtask(&tree);
            by_env.env("ARCH", given);
            let mut by_flag = xtask(&tree);
            by_flag.arg(format!("--arch={given}"));
            for cmd in [&mut by_env, &mut by_flag] {
                let got = rows(cmd.args(["list-all-images", "--json"]));
                let names: Vec<&String> = t.keys().collect();
                assert_eq!(field(&got, "name"), names, "{given}");
                assert!(got.iter().all(|r| r["arch"] == json!(arch)), "{given}: {got:?}");
                let remote: Vec<String> = t
                    .iter()
                    .map(|(n, tag)| format!("localhost:5000/images/{}_{arch}:{tag}", n.replace('_', "/")))
                    .collect();
                assert_eq!(field(&got, "remote"), remote, "{given}");
            }
        }
    }

    /// Each setting from its environment variable, and its flag beating the variable.
    #[test]
    fn flags_beat_environment() {
        let tree = tree();
        let other = Tree::new();
        other.write("solo/Dockerfile", "");
        let content = all_tags(&settings(&tree.root, "x86_64", "content"));
        let gvisor = all_tags(&settings(&tree.root, "x86_64", "gvisor"));
        let arm = all_tags(&settings(&tree.root, "aarch64", "content"));
        let h = "basic_hello";

        let get = |env: &[(&str, &std::ffi::OsStr)], flags: &[&std::ffi::OsStr]| -> Value {
            let mut cmd = xtask(&tree);
            cmd.env("ARCH", "x86_64").envs(env.iter().copied()).arg("list-all-images").args(flags).arg("--json");
            let rows = run(&mut cmd).json();
            let rows = rows.as_array().unwrap();
            rows.iter().find(|r| r["name"] == json!(h) || rows.len() == 1).unwrap().clone()
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);

        let r = get(&[("ARCH", os("aarch64"))], &[]);
        assert_eq!((&r["arch"], &r["tag"]), (&json!("aarch64"), &json!(arm[h])));
        let r = get(&[("ARCH", os("aarch64"))], &[os("--arch"), os("amd64")]);
        assert_eq!((&r["arch"], &r["tag"]), (&json!("x86_64"), &json!(content[h])));

        let r = get(&[("REMOTE_IMAGE_PREFIX", os("env.example/r"))], &[]);
        assert_eq!(r["remote"], json!(format!("env.example/r/basic/hello_x86_64:{}", content[h])));
        let r = get(&[("REMOTE_IMAGE_PREFIX", os("env.example/r"))], &[os("--remote-image-prefix=flag.example:443/r")]);
        assert_eq!(r["remote"], json!(format!("flag.example:443/r/basic/hello_x86_64:{}", content[h])));

        let r = get(&[("LOCAL_IMAGE_PREFIX", os("env.example/l"))], &[]);
        assert_eq!(r["local"], json!(format!("env.example/l/basic/hello:{}", content[h])));
        let r =
            get(&[("LOCAL_IMAGE_PREFIX", os("env.example/l"))], &[os("--local-image-prefix"), os("flag.example/l")]);
        assert_eq!(r["local"], json!(format!("flag.example/l/basic/hello:{}", content[h])));

        let r = get(&[("TAG_SCHEME", os("gvisor"))], &[]);
        assert_eq!(r["tag"], json!(gvisor[h]));
        let r = get(&[("TAG_SCHEME", os("gvisor"))], &[os("--tag-scheme=content")]);
        assert_eq!(r["tag"], json!(content[h]));
        let r = get(&[], &[os("--tag-scheme=gvisor")]);
        assert_eq!(r["tag"], json!(gvisor[h]));

        let r = get(&[("NON_TEST_IMAGES", os("hello"))], &[]);
        assert_eq!(r["test"], json!(false));
        let r = get(&[("NON_TEST_IMAGES", os("hello"))], &[os("--non-test-images=alpine")]);
        assert_eq!(r["test"], json!(true));

        let r = get(&[("IMAGES_DIR", other.root.as_os_str())], &[]);
        assert_eq!(r["name"], json!("solo"));
        let r = get(&[("IMAGES_DIR", other.root.as_os_str())], &[os("--images-dir"), tree.root.as_os_str()]);
        assert_eq!(r["name"], json!(h));

        // Whole rows: every setting at once from the environment, then every flag over it.
        let config = other.config("");
        let env: Vec<(&str, &std::ffi::OsStr)> = vec![
            ("IMAGES_DIR", other.root.as_os_str()),
            ("IMAGES_CONFIG", config.as_os_str()),
            ("ARCH", os("arm64")),
            ("REMOTE_IMAGE_PREFIX", os("env.example/r")),
            ("LOCAL_IMAGE_PREFIX", os("env.example/l")),
            ("TAG_SCHEME", os("gvisor")),
            ("NON_TEST_IMAGES", os("solo")),
        ];
        let solo = legacy_tags(&other.root, &["solo".into()])["solo"].clone();
        assert_eq!(
            get(&env, &[]),
            json!({"name": "solo", "path": "solo", "dockerfile": "Dockerfile", "group": "solo", "arch": "aarch64", "tag": solo,
                   "local": format!("env.example/l/solo:{solo}"), "remote": format!("env.example/r/solo_aarch64:{solo}"), "test": false})
        );
        let flags = [
            os("--images-dir"),
            tree.root.as_os_str(),
            os("--arch=x86_64"),
            os("--remote-image-prefix=flag.example/r"),
            os("--local-image-prefix=flag.example/l"),
            os("--tag-scheme=content"),
            os("--non-test-images=solo"),
        ];
        let t = &content[h];
        assert_eq!(
            get(&env, &flags),
            json!({"name": h, "path": "basic/hello", "dockerfile": "Dockerfile", "group": "basic", "arch": "x86_64", "tag": t,
                   "local": format!("flag.example/l/basic/hello:{t}"), "remote": format!("flag.example/r/basic/hello_x86_64:{t}"), "test": true})
        );
    }

    /// The settings file, under the environment and the flags.
    #[test]
    fn settings_file_under_environment() {
        let tree = tree();
        let config = tree.config(
            "remote_image_prefix = \"file.example/r\"\nlocal_image_prefix = \"file.example/l\"\ntag_scheme = \"gvisor\"\nnon_test_images = [\"hello\"]\n",
        );
        let gvisor = legacy_tags(&tree.root, &["basic/hello".into()])["basic_hello"].clone();
        let content = content_tag(&tree.root, "x86_64", "basic_hello");
        let hello = |cmd: &mut std::process::Command| -> Value {
            let rows = run(cmd.args(["local-image", "basic_hello"]).env("ARCH", "x86_64")).ok().to_string();
            json!(rows)
        };
        assert_eq!(
            hello(xtask(&tree).env("IMAGES_CONFIG", &config)),
            json!(format!("file.example/l/basic/hello:{gvisor}\n"))
        );
        assert_eq!(
            hello(
                xtask(&tree)
                    .env("IMAGES_CONFIG", &config)
                    .env("LOCAL_IMAGE_PREFIX", "env.example/l")
                    .env("TAG_SCHEME", "content")
            ),
            json!(format!("env.example/l/basic/hello:{content}\n"))
        );
        assert_eq!(
            hello(xtask(&tree).env("IMAGES_CONFIG", "/nonexistent").arg(format!("--config={}", config.display()))),
            json!(format!("file.example/l/basic/hello:{gvisor}\n"))
        );
    }

    /// Built-in defaults: content tags, `gvisor.dev/images` and `localhost:5000/images`.
    #[test]
    fn defaults() {
        let tree = tree();
        let t = content_tag(&tree.root, "x86_64", "basic_hello");
        let out = run(xtask(&tree).args(["--arch", "x86_64", "local-image", "basic/hello"]));
        assert_eq!(out.ok(), format!("gvisor.dev/images/basic/hello:{t}\n"));
        let rows = rows(xtask(&tree).args(["--arch", "x86_64", "list-all-images", "--json"]));
        assert_eq!(rows[1]["remote"], json!(format!("localhost:5000/images/basic/hello_x86_64:{t}")));
        assert!(rows.iter().all(|r| r["test"] == json!(true)));
    }

    /// An empty variable is unset (make exports every variable it forwards).
    #[test]
    fn empty_variables_are_unset() {
        let tree = tree();
        let host = Arch::host().unwrap().as_str();
        let rows = rows(
            xtask(&tree)
                .args(["list-all-images", "--json"])
                .env("ARCH", "")
                .env("TAG_SCHEME", "")
                .env("REMOTE_IMAGE_PREFIX", "")
                .env("NON_TEST_IMAGES", ""),
        );
        let t = content_tag(&tree.root, host, "basic_hello");
        let hello = rows.iter().find(|r| r["name"] == json!("basic_hello")).unwrap();
        assert_eq!(hello["arch"], json!(host));
        assert_eq!(hello["remote"], json!(format!("localhost:5000/images/basic/hello_{host}:{t}")));
        assert!(rows.iter().all(|r| r["test"] == json!(true)));
    }

    /// A relative IMAGES_DIR or --images-dir is taken from the current directory.
    #[test]
    fn relative_images_dir() {
        let tree = tree();
        let want = "basic_alpine\nbasic_hello\ndefault\nplatform\n";
        let out = run(xtask(&tree).current_dir(tree.base()).env("IMAGES_DIR", "images").args([
            "--arch",
            "x86_64",
            "list-all-images",
        ]));
        assert_eq!(out.ok(), want);
        let out = run(xtask(&tree).current_dir(&tree.root).env("IMAGES_DIR", "/nonexistent").args([
            "--images-dir",
            ".",
            "--arch",
            "x86_64",
            "list-all-images",
        ]));
        assert_eq!(out.ok(), want);
    }
}

// ---- bad input -----------------------------------------------------------------------------

mod errors {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn tree() -> Tree {
        let t = Tree::new();
        t.write("basic/hello/Dockerfile", "FROM scratch\n")
            .write("basic/alpine/Dockerfile", "FROM alpine\n")
            .write("platform/Dockerfile.x86_64", "FROM scratch\n");
        t
    }

    fn error(cmd: &mut std::process::Command) -> String {
        run(cmd).error_line().to_string()
    }

    fn list(tree: &Tree) -> std::process::Command {
        let mut cmd = xtask(tree);
        cmd.args(["list-all-images", "--json"]).env("ARCH", "x86_64");
        cmd
    }

    #[test]
    fn unknown_image() {
        let tree = tree();
        let r = tree.root.display();
        let local = |args: &[&str]| error(xtask(&tree).env("ARCH", "x86_64").arg("local-image").args(args));
        assert_eq!(
            local(&["basic_helo"]),
            "error: unknown image or group `basic_helo`: did you mean basic_hello, basic, basic_alpine?"
        );
        assert_eq!(
            local(&["basic_hello", "platfrom"]),
            "error: unknown image or group `platfrom`: did you mean platform?"
        );
        assert_eq!(
            local(&["zzz"]),
            "error: unknown image or group `zzz`: run `cargo xtask list-all-images` to see them"
        );
        assert_eq!(
            error(xtask(&tree).env("ARCH", "aarch64").args(["local-image", "platform"])),
            format!("error: image `platform` is not available for aarch64: {r}/platform has no Dockerfile or Dockerfile.aarch64")
        );
    }

    #[test]
    fn images_root_missing() {
        let tree = tree();
        let missing = tree.base().join("nope");
        assert_eq!(
            error(list(&tree).env("IMAGES_DIR", &missing)),
            format!(
                "error: images directory {} does not exist: set IMAGES_DIR or images_dir in xtask/images.toml",
                missing.display()
            )
        );
        let file = tree.path("basic/hello/Dockerfile");
        assert_eq!(
            error(list(&tree).arg("--images-dir").arg(&file)),
            format!("error: images directory {} is not a directory", file.display())
        );
    }

    #[test]
    fn images_root_symlink_loop() {
        let tree = tree();
        let lp = tree.base().join("loop");
        std::os::unix::fs::symlink(&lp, &lp).unwrap();
        assert_eq!(
            error(list(&tree).env("IMAGES_DIR", &lp)),
            format!(
                "error: cannot read images directory {}: Too many levels of symbolic links (os error 40)",
                lp.display()
            )
        );
    }

    /// An architecture is checked with the command line (exit 2), from the
    /// flag and from `ARCH` alike.
    #[test]
    fn unknown_arch() {
        let tree = tree();
        let usage = |value: &str, tip: &str| {
            format!(
                "error: invalid value '{value}' for '--arch <ARCH>'\n  [possible values: x86_64, amd64, aarch64, arm64]\n\n{tip}For more information, try '--help'.\n"
            )
        };
        for cmd in [list(&tree).env("ARCH", "sparc"), list(&tree).arg("--arch=sparc")] {
            let out = run(cmd);
            assert_eq!((out.code, out.stdout.as_str(), out.stderr), (Some(2), "", usage("sparc", "")));
        }
        let out = run(list(&tree).env("ARCH", "X86_64"));
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr),
            (Some(2), "", usage("X86_64", "  tip: a similar value exists: 'x86_64'\n\n"))
        );
    }

    #[test]
    fn unknown_scheme() {
        let tree = tree();
        // A bad value is a bad command line (exit 2), from the environment too.
        for cmd in [list(&tree).env("TAG_SCHEME", "md5"), list(&tree).arg("--tag-scheme=Gvisor")] {
            let out = run(cmd);
            assert_eq!((out.code, out.stdout.as_str()), (Some(2), ""), "{}", out.stderr);
            assert!(out.stderr.starts_with("error: invalid value '"), "{}", out.stderr);
            assert!(out.stderr.contains("[possible values: content, gvisor]"), "{}", out.stderr);
        }
        // From the settings file, the tool says it.
        let config = tree.config("tag_scheme = \"md5\"\n");
        assert_eq!(
            error(list(&tree).env("IMAGES_CONFIG", &config)),
            "error: unknown tag scheme `md5`: use content or gvisor"
        );
    }

    #[test]
    fn bad_prefix() {
        let tree = tree();
        assert_eq!(
            error(list(&tree).env("LOCAL_IMAGE_PREFIX", "Example.org/images")),
            "error: LOCAL_IMAGE_PREFIX `Example.org/images` is not a valid image repository prefix: use lower case letters, digits and . _ - / :"
        );
        assert_eq!(
            error(list(&tree).arg("--remote-image-prefix=a//b")),
            "error: REMOTE_IMAGE_PREFIX `a//b` is not a valid image repository prefix: use lower case letters, digits and . _ - / :"
        );
    }

    /// A directory whose name cannot make an image name: the list commands
    /// warn and skip it; naming it, or its group, fails with the same words;
    /// naming another image works.
    fn invalid_directory(tree: &Tree, name: &str, group: &str, reason: &str) {
        let out = run(xtask(tree).arg("list-all-images").env("ARCH", "x86_64"));
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr),
            (Some(0), "basic_alpine\nbasic_hello\nplatform\n", format!("warning: skipped: {reason}\n"))
        );
        let out = run(xtask(tree).args(["list-all-test-images", "--json"]).env("ARCH", "x86_64"));
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stderr, format!("warning: skipped: {reason}\n"));
        let document: Value = serde_json::from_str(&out.stdout).unwrap();
        let names: Vec<Value> = document["images"].as_array().unwrap().iter().map(|r| r["name"].clone()).collect();
        assert_eq!(names, [json!("basic_alpine"), json!("basic_hello"), json!("platform")]);
        for arg in [name, group] {
            let local =
                |print: &str| error(xtask(tree).args(["local-image", "--print", print, arg]).env("ARCH", "x86_64"));
            assert_eq!(local("tag"), format!("error: {reason}"), "{arg}");
            assert_eq!(local("path"), format!("error: {reason}"), "{arg}");
        }
        let t = content_tag(&tree.root, "x86_64", "basic_hello");
        assert_eq!(
            run(xtask(tree).args(["local-image", "basic/hello"]).env("ARCH", "x86_64")).ok(),
            format!("gvisor.dev/images/basic/hello:{t}\n")
        );
    }

    #[test]
    fn underscore_in_image_directory() {
        let tree = tree();
        tree.write("basic/my_image/Dockerfile", "");
        let reason = format!(
            "image directory {}/basic/my_image has `_` in its name `my_image`: image names join directories with `_`, so names would be ambiguous; use `-` instead",
            tree.root.display()
        );
        invalid_directory(&tree, "basic_my_image", "basic_my_image", &reason);
        // Its group holds valid images too: naming the group names it.
        assert_eq!(
            error(xtask(&tree).args(["local-image", "basic"]).env("ARCH", "x86_64")),
            format!("error: {reason}")
        );
    }

    #[test]
    fn underscore_in_group_directory() {
        let tree = tree();
        tree.write("my_group/img/Dockerfile", "");
        let reason = format!(
            "image directory {}/my_group/img has `_` in its name `my_group`: image names join directories with `_`, so names would be ambiguous; use `-` instead",
            tree.root.display()
        );
        invalid_directory(&tree, "my_group/img", "my_group", &reason);
    }

    #[test]
    fn upper_case_image_directory() {
        let tree = tree();
        tree.write("basic/Hello/Dockerfile", "");
        let reason = format!(
            "image directory {}/basic/Hello is not a valid image name (`Hello`): use lower case letters, digits, and `.` or `-` between them",
            tree.root.display()
        );
        invalid_directory(&tree, "basic_Hello", "basic/Hello/", &reason);
    }

    #[test]
    fn non_utf8_image_directory() {
        let tree = tree();
        let dir = tree.root.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("Dockerfile"), "").unwrap();
        let reason =
            format!("image directory {}/bad\u{fffd} has a name that is not UTF-8: rename it", tree.root.display());
        invalid_directory(&tree, "bad\u{fffd}", "bad\u{fffd}", &reason);
    }

    /// The library's strict discovery, which the engine commands use, refuses
    /// the tree; the lenient one sets the directory apart.
    #[test]
    fn strict_and_lenient_discovery() {
        let tree = tree();
        tree.write("bad_name/Dockerfile", "").write("bad_name/inner/Dockerfile", "");
        let arch = Arch::X86_64;
        let strict = discover(&tree.root, arch).unwrap_err().to_string();
        let first = format!(
            "image directory {}/bad_name has `_` in its name `bad_name`: image names join directories with `_`, so names would be ambiguous; use `-` instead",
            tree.root.display()
        );
        assert_eq!(strict, first);
        let lenient = xtask::catalog::discovery::discover_lenient(&tree.root, arch).unwrap();
        let names: Vec<&str> = lenient.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["basic_alpine", "basic_hello", "platform"]);
        assert_eq!(
            lenient.invalid,
            [
                xtask::catalog::discovery::Invalid { path: "bad_name".into(), reason: first },
                xtask::catalog::discovery::Invalid {
                    path: "bad_name/inner".into(),
                    reason: format!(
                        "image directory {}/bad_name/inner has `_` in its name `bad_name`: image names join directories with `_`, so names would be ambiguous; use `-` instead",
                        tree.root.display()
                    )
                },
            ]
        );
    }

    #[test]
    fn dockerfile_in_images_root() {
        let tree = tree();
        tree.write("Dockerfile", "");
        assert_eq!(
            error(&mut list(&tree)),
            format!(
                "error: {} holds a Dockerfile itself: put each image in a directory of its own",
                tree.root.display()
            )
        );
    }

    #[test]
    fn fifo_in_image_under_content_scheme() {
        let tree = tree();
        tree.mkfifo("basic/hello/pipe");
        let want = format!(
            "error: {}/basic/hello/pipe is not a regular file, directory or symlink: a build context cannot hold it; remove it or list it in .dockerignore",
            tree.root.display()
        );
        assert_eq!(error(&mut list(&tree)), want);
        assert_eq!(error(xtask(&tree).args(["local-image", "basic_hello"]).env("ARCH", "x86_64")), want);
        // Images that do not hold it are unaffected; the plain listing hashes nothing.
        let t = content_tag(&tree.root, "x86_64", "basic_alpine");
        assert_eq!(
            run(xtask(&tree).args(["local-image", "basic_alpine"]).env("ARCH", "x86_64")).ok(),
            format!("gvisor.dev/images/basic/alpine:{t}\n")
        );
        assert_eq!(
            run(xtask(&tree).arg("list-all-images").env("ARCH", "x86_64")).ok(),
            "basic_alpine\nbasic_hello\nplatform\n"
        );
        // The legacy scheme hashes regular files only, as `find -type f` did.
        assert_eq!(run(list(&tree).env("TAG_SCHEME", "gvisor")).code, Some(0));
    }

    #[test]
    fn from_cycle_and_missing_base() {
        let tree = tree();
        tree.write("basic/hello/Dockerfile", "FROM gvisor.dev/images/basic/alpine\n")
            .write("basic/alpine/Dockerfile", "FROM gvisor.dev/images/basic/hello:latest\n");
        assert_eq!(
            error(xtask(&tree).args(["local-image", "basic_hello"]).env("ARCH", "x86_64")),
            "error: images are built FROM each other in a cycle: basic_hello -> basic_alpine -> basic_hello"
        );
        tree.write("basic/alpine/Dockerfile", "FROM gvisor.dev/images/basic/gone:latest\n");
        assert_eq!(
            error(xtask(&tree).args(["local-image", "basic_alpine"]).env("ARCH", "x86_64")),
            format!(
                "error: basic_alpine is built FROM gvisor.dev/images/basic/gone:latest, which is not an image for x86_64: add {}/basic/gone or fix the FROM line",
                tree.root.display()
            )
        );
    }

    /// The legacy boolean variables are set to 1 (or true, yes) and unset by
    /// empty, 0, false or no: each is accepted, so the run goes on to the
    /// first real fault, here an unknown image.
    #[test]
    fn legacy_boolean_variables() {
        let tree = tree();
        for var in ["SKIP_IMAGE_LOAD", "DOCKER_PUSH_AS_LATEST"] {
            for value in ["1", "true", "yes", "", "0", "false", "no"] {
                let out = run(xtask(&tree).args(["push", "--dry-run", "nope"]).env("ARCH", "x86_64").env(var, value));
                assert_eq!(
                    out.error_line(),
                    "error: unknown image or group `nope`: run `cargo xtask list-all-images` to see them",
                    "{var}={value}"
                );
            }
        }
    }

    #[test]
    fn bad_settings_file() {
        let tree = tree();
        let config = tree.config("tag_sceme = \"gvisor\"\n");
        // The parser's message spans lines (it draws the place of the fault).
        let out = run(list(&tree).env("IMAGES_CONFIG", &config));
        assert_eq!(out.code, Some(1));
        let document: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
        assert!(document["error"].as_str().unwrap().starts_with("invalid settings file"), "{}", out.stdout);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        let first = out.stderr.lines().next().unwrap();
        assert_eq!(
            first,
            format!("error: invalid settings file {}: TOML parse error at line 1, column 1", config.display())
        );
        assert!(out.stderr.contains("unknown field `tag_sceme`"), "{}", out.stderr);
        let missing = tree.base().join("missing.toml");
        let line = error(list(&tree).env("IMAGES_CONFIG", &missing));
        assert_eq!(
            line,
            format!(
                "error: cannot read the settings file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }
}

// ---- the legacy Makefile shim ---------------------------------------------------------------

mod make_shim {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;

    fn tree() -> Tree {
        let t = Tree::new();
        t.write("basic/hello/Dockerfile", "FROM scratch\n")
            .write("basic/hello/hello.txt", "hello\n")
            .write("basic/alpine/Dockerfile.aarch64", "FROM alpine\n")
            .write("platform/Dockerfile.x86_64", "FROM scratch\n");
        t
    }

    /// `make -C <workspace>` with `CARGO` standing in for cargo: it logs its
    /// arguments and runs the built binary as `cargo xtask` (the workspace's
    /// alias, checked below) would, so no nested cargo build is involved.
    fn make(tree: &Tree) -> Command {
        let cargo = tree.base().join("cargo");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n[ \"$1\" = xtask ] || exit 97\nshift\nexec '{}' \"$@\"\n",
            tree.base().join("cargo.log").display(),
            env!("CARGO_BIN_EXE_xtask")
        );
        std::fs::write(&cargo, script).unwrap();
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new("make");
        clean_env(&mut cmd);
        cmd.arg("--no-print-directory").arg("-C").arg(xtask::workspace_root());
        cmd.env("CARGO", &cargo);
        cmd.env("IMAGES_DIR", &tree.root).env("IMAGES_CONFIG", tree.config("")).env("ARCH", "x86_64");
        cmd
    }

    /// What the stand-in cargo was asked to run, one line per call.
    fn cargo_calls(tree: &Tree) -> String {
        std::fs::read_to_string(tree.base().join("cargo.log")).unwrap_or_default()
    }

    #[test]
    fn cargo_alias_runs_the_xtask_binary() {
        let text = std::fs::read_to_string(xtask::workspace_root().join(".cargo/config.toml")).unwrap();
        let config: toml::Table = toml::from_str(&text).unwrap();
        let alias: Vec<&str> =
            config["alias"]["xtask"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        // Quiet, its progress bar on (see `launch`), and the xtask package's binary.
        assert_eq!(alias[..2], ["run", "--quiet"]);
        assert_eq!(alias[alias.len() - 3..], ["--package", "xtask", "--"]);
    }

    #[test]
    fn list_all_images() {
        let tree = tree();
        let want = run(xtask(&tree).env("ARCH", "x86_64").arg("list-all-images")).ok().to_string();
        assert_eq!(want, "basic_hello\nplatform\n");
        assert_eq!(run(make(&tree).arg("list-all-images")).ok(), want);
        let arm = run(xtask(&tree).env("ARCH", "aarch64").arg("list-all-images")).ok().to_string();
        assert_eq!(arm, "basic_alpine\nbasic_hello\n");
        assert_eq!(run(make(&tree).args(["ARCH=aarch64", "list-all-images"])).ok(), arm);
        assert_eq!(cargo_calls(&tree), "xtask list-all-images\nxtask list-all-images\n");
    }

    #[test]
    fn local_image() {
        let tree = tree();
        let want = run(xtask(&tree).env("ARCH", "x86_64").args(["local-image", "basic_hello"])).ok().to_string();
        let t = content_tag(&tree.root, "x86_64", "basic_hello");
        assert_eq!(want, format!("gvisor.dev/images/basic/hello:{t}\n"));
        assert_eq!(run(make(&tree).arg("local-image-basic_hello")).ok(), want);
        let gvisor = run(make(&tree).args(["TAG_SCHEME=gvisor", "local-image-basic_hello"])).ok().to_string();
        let legacy = legacy_tags(&tree.root, &["basic/hello".into()])["basic_hello"].clone();
        assert_eq!(gvisor, format!("gvisor.dev/images/basic/hello:{legacy}\n"));
        assert_eq!(cargo_calls(&tree), "xtask local-image basic_hello\nxtask local-image basic_hello\n");
    }

    /// Errors pass through: the binary's line on stderr, and make fails.
    #[test]
    fn errors_pass_through() {
        let tree = tree();
        let out = run(make(&tree).arg("local-image-nope"));
        assert_ne!(out.code, Some(0));
        assert_eq!(
            out.stderr.lines().next(),
            Some("error: unknown image or group `nope`: run `cargo xtask list-all-images` to see them")
        );
    }

    #[test]
    fn help_lists_every_legacy_target() {
        let tree = tree();
        let help = run(make(&tree).arg("help")).ok().to_string();
        let words: BTreeSet<&str> = help.split_whitespace().collect();
        for target in [
            "list-all-images",
            "list-all-test-images",
            "load-all-images",
            "load-all-test-images",
            "push-all-images",
            "push-all-test-images",
            "build-all-images",
            "test-all-test-images",
            "register-cross",
        ] {
            assert!(words.contains(target), "`make help` does not list {target}:\n{help}");
        }
        for pattern in ["local-image-<", "load-<", "pull-<", "rebuild-<", "build-<", "tag-<", "test-<", "push-<"] {
            assert!(
                help.split(|c: char| c.is_whitespace() || c == '(').any(|w| w.starts_with(pattern)),
                "`make help` does not list {pattern}…>:\n{help}"
            );
        }
        // Plain `make` is the help, and neither runs cargo.
        assert_eq!(run(&mut make(&tree)).ok(), help);
        assert_eq!(cargo_calls(&tree), "");
    }
}
