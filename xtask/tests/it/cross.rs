//! Cross-architecture work end to end, against a real engine
//! (`XTASK_TEST_ENGINE`: docker, the default, or podman) and the loopback
//! registry: aarch64 images built on this host under qemu, pushed, pulled
//! back; Dockerfiles per architecture; multi-arch indexes; `register-cross`;
//! a docker daemon elsewhere (`DOCKER_HOST`); and `--shard` through the
//! binary. Each test works in a sandbox of its own and removes the local
//! names it made.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use serde_json::Value;
use support::{
    base_image, base_image_arm64, docker, image_arch, image_id, index_members, manifest_digests, outcome, pull,
    registry_has, registry_platform, remote_docker_host, run, run_in_platform, untag, Run, Sandbox,
};

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// The array under `key` in the `--json` document a command printed.
fn json_array(run: &Run, key: &str) -> Vec<Value> {
    run.items(key)
}

/// Builds an aarch64 image under qemu, pushes it, removes it and loads it
/// back from the registry, with `ARCH` spelled `arch`.
fn foreign_image_round_trip(test: &str, arch: &str) {
    let s = Sandbox::new(test);
    s.write("cross/Dockerfile", format!("FROM {}\nRUN uname -m > /arch\nCOPY id /id\n", base_image_arm64()));
    s.write("cross/id", format!("{}\n", s.id));
    let with_arch = |args: &[&str]| run(s.cmd(args).env("ARCH", arch));
    let tag = s.arch_tag(arch, "cross");
    assert_ne!(tag, s.tag("cross"), "the architecture must change the tag");
    let local = s.local("cross");
    let (tagged, latest) = (format!("{local}:{tag}"), format!("{local}:latest"));
    // The canonical spelling names the remote repository and the log directory.
    let remote = format!("{}:{tag}", s.remote_for("aarch64", "cross"));
    // Each run writes a log of its own.
    let log = || s.log_for("aarch64", "cross");

    // The build registers qemu itself when it is needed.
    let built = with_arch(&["rebuild", "cross", "--json"]);
    assert_eq!(built.success().outcomes(), [outcome("cross", &tag, "built", Some(&log()))], "{built}");
    assert_eq!(s.local_names(), sorted(vec![remote.clone(), tagged.clone(), latest.clone()]));
    let uname = run_in_platform(&latest, "linux/arm64", &["cat", "/arch"]);
    let recorded = image_arch(&latest);
    eprintln!("{arch}: `RUN uname -m` wrote {uname:?}; the image records architecture {recorded:?}");
    assert_eq!(uname, "aarch64\n");
    assert_eq!(recorded, "arm64");
    let id = image_id(&latest).unwrap();

    let pushed = with_arch(&["push", "cross", "--json"]);
    assert_eq!(pushed.success().outcomes(), [outcome("cross", &tag, "pushed", Some(&log()))], "{pushed}");
    assert!(registry_has(&remote), "the registry lacks {remote}");
    assert_eq!(registry_platform(&remote), "linux/arm64");

    untag(&s.local_names());
    assert_eq!(image_id(&id), None, "the image is still present locally");
    let loaded = with_arch(&["load", "cross", "--json"]);
    assert_eq!(loaded.success().outcomes(), [outcome("cross", &tag, "pulled", Some(&log()))], "{loaded}");
    assert_eq!(s.local_names(), sorted(vec![remote, tagged.clone(), latest.clone()]));
    assert_eq!(image_id(&tagged).as_ref(), Some(&id));
    assert_eq!(image_id(&latest).as_ref(), Some(&id));
    assert_eq!(image_arch(&latest), "arm64");
}

#[test]
fn aarch64_image_is_built_under_qemu_pushed_and_pulled_back() {
    foreign_image_round_trip("cross-aarch64", "aarch64");
}

#[test]
fn arm64_spelling_is_aarch64() {
    foreign_image_round_trip("cross-arm64", "arm64");
}

#[test]
fn dockerfiles_per_architecture() {
    let s = Sandbox::new("per-arch");
    s.write("only86/Dockerfile.x86_64", "FROM scratch\nCOPY id /id\n");
    s.write("only86/id", &s.id);
    s.write("both/Dockerfile", "FROM scratch\nCOPY generic /which\n");
    s.write("both/Dockerfile.aarch64", format!("FROM {}\nCOPY aarch64 /which\n", base_image_arm64()));
    s.write("both/generic", format!("generic {}\n", s.id));
    s.write("both/aarch64", format!("aarch64 {}\n", s.id));
    let aarch64 = |args: &[&str]| run(s.cmd(args).env("ARCH", "aarch64"));

    // The listing: which images there are for each architecture, from which Dockerfile.
    let dockerfiles = |run: &Run| -> Vec<(String, String)> {
        let items = json_array(run.success(), "images");
        items.iter().map(|i| (i["name"].as_str().unwrap().into(), i["dockerfile"].as_str().unwrap().into())).collect()
    };
    let listed = aarch64(&["list-all-images", "--json"]);
    assert_eq!(dockerfiles(&listed), [("both".into(), "Dockerfile.aarch64".into())]);
    let listed = run(s.cmd(&["list-all-images", "--json"]).env("ARCH", "x86_64"));
    assert_eq!(
        dockerfiles(&listed),
        [("both".into(), "Dockerfile".into()), ("only86".into(), "Dockerfile.x86_64".into())]
    );

    let both = s.arch_tag("aarch64", "both");
    let all = aarch64(&["load-all-images", "--json"]);
    let skipped = serde_json::json!({ "name": "only86", "tag": null, "action": "skipped" });
    assert_eq!(
        all.success().outcomes(),
        [outcome("both", &both, "built", Some(&s.log_for("aarch64", "both"))), skipped.clone()]
    );
    assert_eq!(all.images()[1]["reason"], "not available for aarch64", "{all}");
    let row = all.stderr_lines().into_iter().find(|l| l.starts_with("only86 ")).unwrap_or_else(|| panic!("{all}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["only86", "-", "skipped:", "not", "available", "for", "aarch64", "0.0"]
    );
    let which = run_in_platform(&format!("{}:latest", s.local("both")), "linux/arm64", &["cat", "/which"]);
    assert_eq!(which, format!("aarch64 {}\n", s.id), "the build did not use Dockerfile.aarch64");

    let one = aarch64(&["load", "only86", "--json"]);
    assert_eq!(one.success().outcomes(), [skipped]);
    assert_eq!(one.images()[0]["reason"], "not available for aarch64", "{one}");
    assert_eq!(one.stderr_lines(), ["1 image: 1 skipped"], "{one}");
    assert!(s.local_names().iter().all(|n| !n.contains("/only86")), "{:?}", s.local_names());
}

#[test]
fn push_manifest_publishes_an_index_over_both_architectures() {
    let s = Sandbox::new("manifest");
    s.write("multi/Dockerfile.x86_64", format!("FROM {}\nCOPY id /id\n", base_image()));
    s.write("multi/Dockerfile.aarch64", format!("FROM {}\nCOPY id /id\n", base_image_arm64()));
    s.write("multi/id", format!("{}\n", s.id));
    let with_arch = |arch: &str, args: &[&str]| run(s.cmd(args).env("ARCH", arch));
    let member = |arch: &str| format!("{}:{}", s.remote_for(arch, "multi"), s.arch_tag(arch, "multi"));
    let (amd64, arm64) = (member("x86_64"), member("aarch64"));

    with_arch("x86_64", &["push", "multi"]).success();
    let early = with_arch("x86_64", &["push-manifest", "multi"]);
    early.status(1);
    assert_eq!(
        early.stderr_lines(),
        [format!(
            "error: multi for aarch64 is not in the registry ({arm64}): push it first with \
             `ARCH=aarch64 cargo xtask push multi`"
        )],
        "{early}"
    );

    with_arch("aarch64", &["push", "multi"]).success();
    let published = with_arch("x86_64", &["push-manifest", "multi", "--json"]);
    let indexes = json_array(published.success(), "indexes");
    assert_eq!(indexes.len(), 1, "{published}");
    let index = indexes[0]["reference"].as_str().unwrap().to_string();
    let tag = index.strip_prefix(&format!("{}/multi:", s.remote_prefix)).unwrap_or_else(|| panic!("{published}"));
    assert!(tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()), "{published}");
    assert_eq!(published.stderr_lines(), [format!("pushed index {index} over 2")], "{published}");

    let members: BTreeMap<String, String> = index_members(&index).into_iter().collect();
    let digest = |reference: &str| -> String {
        let digests = manifest_digests(reference);
        assert_eq!(digests.len(), 1, "{reference}: {digests:?}");
        digests[0].clone()
    };
    let expected: BTreeMap<String, String> =
        [("linux/amd64".to_string(), digest(&amd64)), ("linux/arm64".to_string(), digest(&arm64))].into();
    assert_eq!(members, expected);

    // Each platform's pull is the very image pushed for that architecture.
    for (platform, arch, member) in [("linux/arm64", "arm64", &arm64), ("linux/amd64", "amd64", &amd64)] {
        pull(&index, Some(platform));
        assert_eq!(image_arch(&index), arch, "{index} pulled for {platform}");
        assert_eq!(image_id(&index), image_id(member), "{index} pulled for {platform}");
    }
}

#[test]
fn register_cross_enables_qemu_for_foreign_architectures_only() {
    let s = Sandbox::new("register");
    let aarch64 = run(s.cmd(&["register-cross"]).env("ARCH", "aarch64"));
    let said = aarch64.success().stderr.clone();
    assert!(
        said == "aarch64 binaries already run here through qemu\n"
            || said.starts_with("aarch64 binaries now run here through qemu (from "),
        "{aarch64}"
    );
    let state = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").unwrap();
    assert_eq!(state.lines().next(), Some("enabled"), "{state}");

    let host = run(s.cmd(&["register-cross"]).env("ARCH", "x86_64"));
    assert_eq!(host.success().stderr, "x86_64 is this host's architecture: nothing to register\n");
    assert_eq!(host.stdout, "");
}

/// Untags names on the docker daemon at `host`, on drop.
struct RemoteNames {
    host: String,
    names: Vec<String>,
}

impl Drop for RemoteNames {
    fn drop(&mut self) {
        let _ = Command::new("docker").arg("rmi").args(&self.names).env("DOCKER_HOST", &self.host).output();
    }
}

/// `DOCKER_HOST` reaches the engine as it is. Only docker has daemons
/// elsewhere, so this runs docker whatever `XTASK_TEST_ENGINE` says.
#[test]
fn docker_host_elsewhere_gets_the_build() {
    let s = Sandbox::new("docker-host");
    s.scratch_image("x");
    let tag = s.tag("x");
    let host = remote_docker_host();
    let local = s.local("x");
    let names = vec![format!("{local}:{tag}"), format!("{local}:latest"), format!("{}:{tag}", s.remote("x"))];
    let _cleanup = RemoteNames { host: host.clone(), names: names.clone() };

    let built = run(s.cmd(&["rebuild", "x", "--json"]).env("IMAGES_ENGINE", "docker").env("DOCKER_HOST", &host));
    // docker builds, whatever the engine under test: with its classic builder
    // unless the builder under test is one of docker's.
    let kind = match support::builder() {
        support::Builder::Podman => "classic",
        other => other.kind(),
    };
    assert_eq!(built.success().outcomes_built_by(kind), [outcome("x", &tag, "built", Some(&s.log("x")))]);
    let inspect = |name: &str, host: Option<&str>| {
        let mut cmd = Command::new("docker");
        cmd.args(["image", "inspect", "--format", "{{.Id}}", name]);
        match host {
            Some(host) => cmd.env("DOCKER_HOST", host),
            None => cmd.env_remove("DOCKER_HOST"),
        };
        cmd.output().unwrap().status.success()
    };
    for name in &names {
        assert!(inspect(name, Some(&host)), "{name} is not on the daemon at {host}");
        assert!(!inspect(name, None), "{name} is on the main daemon");
    }
    // The main daemon still answers for itself.
    assert!(docker(&["version"]).status.success());
}

/// Images `s{i}` on their own (of several sizes) and families `f{i}`, each a
/// base with children built `FROM` it, one child with a child of its own.
fn generated_tree(s: &Sandbox) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut names = BTreeSet::new();
    let mut edges = Vec::new();
    for i in 0..14 {
        s.write(&format!("s{i}/Dockerfile"), "FROM scratch\nCOPY data /data\n");
        s.write(&format!("s{i}/data"), "x".repeat((i % 5) * 300_000 + i));
        names.insert(format!("s{i}"));
    }
    for f in 0..4 {
        let base = format!("f{f}-base");
        s.scratch_image(&base);
        names.insert(base.clone());
        for c in 0..3 {
            let child = format!("f{f}-c{c}");
            s.write(&format!("{child}/Dockerfile"), format!("FROM {}:latest\nCOPY id /id\n", s.local(&base)));
            s.write(&format!("{child}/id"), &child);
            names.insert(child.clone());
            edges.push((child, base.clone()));
        }
        let grandchild = format!("f{f}-g");
        let parent = format!("f{f}-c0");
        s.write(&format!("{grandchild}/Dockerfile"), format!("FROM {}:latest\nCOPY id /id\n", s.local(&parent)));
        s.write(&format!("{grandchild}/id"), &grandchild);
        names.insert(grandchild.clone());
        edges.push((grandchild, parent));
    }
    (names, edges)
}

#[test]
fn shards_cover_every_image_once_and_keep_families_together() {
    let s = Sandbox::new("shards");
    let (names, edges) = generated_tree(&s);
    assert_eq!(names.len(), 34);

    for count in 1..=5 {
        let mut home: BTreeMap<String, usize> = BTreeMap::new();
        for index in 1..=count {
            let shard = format!("{index}/{count}");
            let plan = s.xtask(&["load-all-images", "--dry-run", "--json", "--shard", &shard]);
            let jobs = json_array(plan.success(), "plan");
            assert!(
                plan.stderr_lines()
                    .iter()
                    .any(|l| l.starts_with(&format!("shard {shard}: {} of 34 images", jobs.len()))),
                "{plan}"
            );
            for job in &jobs {
                let name = job["name"].as_str().unwrap().to_string();
                // A family stays on one shard, so no base comes from elsewhere.
                assert_eq!(job["requested"], Value::Bool(true), "{name} on shard {shard} is only a base: {plan}");
                // The registry lacks them all: straight to the build.
                assert_eq!(job["steps"], serde_json::json!([{ "step": "build" }]), "{plan}");
                if let Some(other) = home.insert(name.clone(), index) {
                    panic!("{name} is on shards {other}/{count} and {shard}");
                }
            }
        }
        assert_eq!(home.keys().cloned().collect::<BTreeSet<_>>(), names, "{count} shards do not cover every image");
        for (child, base) in &edges {
            assert_eq!(home[child], home[base], "{child} and its base {base} are on different shards of {count}");
        }
    }

    let invalid = s.xtask(&["load-all-images", "--dry-run", "--shard", "0/3"]);
    invalid.status(2);
    assert_eq!(invalid.stdout, "");
    assert_eq!(
        invalid.stderr,
        "error: invalid value '0/3' for '--shard <K/N>': invalid shard `0/3`: use K/N with 1 <= K <= N, e.g. 2/4\n\n\
         For more information, try '--help'.\n"
    );
    assert_eq!(s.local_names(), Vec::<String>::new());
}

/// The engine's own CLI, pushing to the loopback registry.
fn engine_push(reference: &str) {
    let mut args = vec!["push"];
    if support::engine() == support::Engine::Podman {
        args.push("--tls-verify=false");
    }
    args.push(reference);
    support::engine_ok(&args);
}

/// The first line of a build log, which tells the builder that wrote it.
fn log_start(log: &str) -> String {
    let text = fs::read_to_string(log).unwrap_or_else(|e| panic!("{log}: {e}"));
    let first = text.lines().find(|l| l.contains("Step 1/") || l.contains("STEP 1/") || l.starts_with("#1 "));
    first.unwrap_or_else(|| panic!("no build step in {log}:\n{text}")).to_string()
}

/// The layer cache of the host's build of an image is never used for
/// another architecture's: `FROM scratch` + `COPY` built for x86_64, then
/// pushed for aarch64, is a real arm64 image in the registry.
#[test]
fn a_foreign_build_never_reuses_the_host_build() {
    let s = Sandbox::new("foreign-cache");
    s.write("ab/one/Dockerfile", "FROM scratch\nCOPY . /site/\n");
    s.write("ab/one/f.txt", format!("{}\n", s.id));
    let with_arch = |arch: &str, args: &[&str]| run(s.cmd(args).env("ARCH", arch));
    with_arch("x86_64", &["load", "ab_one"]).success();
    let host = image_id(&format!("{}:latest", s.local("ab/one"))).unwrap();
    assert_eq!(image_arch(&format!("{}:latest", s.local("ab/one"))), "amd64");

    let pushed = with_arch("aarch64", &["push", "ab_one", "--json"]);
    let tag = s.arch_tag("aarch64", "ab_one");
    let log = s.log_for("aarch64", "ab_one");
    assert_eq!(pushed.success().outcomes(), [outcome("ab_one", &tag, "pushed", Some(&log))], "{pushed}");
    let remote = format!("{}:{tag}", s.remote_for("aarch64", "ab/one"));
    assert_eq!(registry_platform(&remote), "linux/arm64");
    assert_ne!(image_id(&remote).unwrap(), host, "the aarch64 image is the x86_64 one");
    assert_eq!(image_arch(&remote), "arm64");
    assert!(log_start(&log).contains(support::builder().log_start()), "{}", log_start(&log));

    // Builders that match cached layers across platforms build foreign
    // images without the cache, and say so once.
    let said: Vec<&str> = pushed.stderr_lines().into_iter().filter(|l| l.starts_with("building with ")).collect();
    let cache = "without the layer cache for aarch64 images: it would reuse layers cached for another architecture";
    let expected = match support::builder() {
        support::Builder::Classic => format!(
            "building with docker's classic builder, {cache} (BuildKit keeps them apart: install docker's buildx plugin)"
        ),
        support::Builder::Buildx => "building with BuildKit (buildx, driver docker)".into(),
        support::Builder::BuildKitEnv => "building with BuildKit (the daemon's own, DOCKER_BUILDKIT=1)".into(),
        support::Builder::Podman => format!("building with podman, {cache}"),
    };
    assert_eq!(said, [expected.as_str()], "{pushed}");
}

/// An image built `FROM` a base that exists only for another architecture
/// fails, naming both platforms or the base, and nothing gets a name or
/// reaches the registry.
#[test]
fn a_base_for_another_architecture_fails_clearly() {
    let s = Sandbox::new("foreign-base");
    s.write("on86/Dockerfile", format!("FROM {}\nCOPY id /id\n", base_image()));
    s.write("on86/id", &s.id);
    let tag = s.arch_tag("aarch64", "on86");
    let failed = run(s.cmd(&["push", "on86"]).env("ARCH", "aarch64"));
    failed.status(1);
    let error = failed
        .stderr_lines()
        .into_iter()
        .find(|l| l.starts_with("error: on86: "))
        .unwrap_or_else(|| panic!("{failed}"));
    eprintln!("{:?}: {error}", support::builder());
    let log = s.log_for("aarch64", "on86");
    let expected = match support::builder() {
        // The classic builder takes the amd64 base and builds an amd64 image.
        support::Builder::Classic => format!(
            "error: on86: built a linux/amd64 image, not linux/arm64: its base image is for another architecture; \
             nothing was tagged; log: {log}"
        ),
        _ => String::new(),
    };
    if expected.is_empty() {
        // BuildKit and podman look the base up for linux/arm64 and do not find it.
        assert!(error.contains("is its base image available for linux/arm64?"), "{failed}");
        assert!(error.ends_with(&format!("; log: {log}")), "{failed}");
    } else {
        assert_eq!(error, expected, "{failed}");
    }
    assert_eq!(s.local_names(), Vec::<String>::new());
    assert!(!registry_has(&format!("{}:{tag}", s.remote_for("aarch64", "on86"))));
}

/// `:latest` has no architecture in its name: it follows the architecture
/// loaded last, and the tool says when it moves it from another one. A
/// local tag for another architecture does not count as present.
#[test]
fn latest_follows_the_architecture_loaded_last() {
    let s = Sandbox::new("latest-switch");
    s.scratch_image("tools");
    // The gvisor scheme gives both architectures one tag, so the local
    // `:<tag>` name is shared too.
    let with_arch = |arch: &str, args: &[&str]| run(s.cmd(args).env("ARCH", arch).env("TAG_SCHEME", "gvisor"));
    let latest = format!("{}:latest", s.local("tools"));
    with_arch("x86_64", &["load", "tools"]).success();
    assert_eq!(image_arch(&latest), "amd64");

    let arm = with_arch("aarch64", &["load", "tools", "--json"]);
    let tag = arm.success().outcomes()[0]["tag"].as_str().unwrap().to_string();
    assert_eq!(arm.outcomes(), [outcome("tools", &tag, "built", Some(&s.log_for("aarch64", "tools")))], "{arm}");
    let moved = format!("tools: {latest} now points at the linux/arm64 image (it was linux/amd64)");
    assert!(arm.stderr_lines().contains(&moved.as_str()), "{arm}");
    assert_eq!(image_arch(&latest), "arm64");
    assert_eq!(image_arch(&format!("{}:{tag}", s.local("tools"))), "arm64");

    // Back on x86_64, the image under the x86_64 remote name is present: it
    // gets the local names back, and nothing is pulled or built.
    let back = with_arch("x86_64", &["load", "tools", "--json"]);
    assert_eq!(back.success().outcomes(), [outcome("tools", &tag, "tagged", None)], "{back}");
    let moved = format!("tools: {latest} now points at the linux/amd64 image (it was linux/arm64)");
    assert!(back.stderr_lines().contains(&moved.as_str()), "{back}");
    assert_eq!(image_arch(&latest), "amd64");

    // Present for this architecture: nothing to do and nothing said.
    let warm = with_arch("x86_64", &["load", "tools", "--json"]);
    assert_eq!(warm.success().outcomes(), [outcome("tools", &tag, "present", None)], "{warm}");
    assert!(!warm.stderr.contains("now points at"), "{warm}");
}

/// A registry that holds an amd64 image under an aarch64 name (pushed by
/// hand here; by an older tool in life): `push-manifest` refuses to index
/// it, `pull` refuses it and leaves no name, and `load` builds instead.
#[test]
fn a_wrong_architecture_in_the_registry_is_refused() {
    let s = Sandbox::new("wrong-in-registry");
    s.scratch_image("multi");
    let with_arch = |arch: &str, args: &[&str]| run(s.cmd(args).env("ARCH", arch));
    with_arch("x86_64", &["push", "multi"]).success();
    let amd64 = format!("{}:{}", s.remote_for("x86_64", "multi"), s.arch_tag("x86_64", "multi"));
    let arm_tag = s.arch_tag("aarch64", "multi");
    let arm64 = format!("{}:{arm_tag}", s.remote_for("aarch64", "multi"));
    support::engine_ok(&["tag", &amd64, &arm64]);
    engine_push(&arm64);
    untag(std::slice::from_ref(&arm64));
    assert_eq!(registry_platform(&arm64), "linux/amd64");

    let refused = with_arch("x86_64", &["push-manifest", "multi"]);
    refused.status(1);
    assert_eq!(
        refused.stderr_lines(),
        [format!(
            "error: multi for aarch64 in the registry ({arm64}) is a linux/amd64 image, not linux/arm64: no index \
             was published; it was built for the wrong architecture, delete it from the registry and push it \
             again with `ARCH=aarch64 cargo xtask push multi`"
        )],
        "{refused}"
    );
    let index_tag = xtask::catalog::tagging::index_tag(&[
        (xtask::model::Arch::X86_64, amd64.clone()),
        (xtask::model::Arch::Aarch64, arm64.clone()),
    ]);
    assert!(!registry_has(&format!("{}/multi:{index_tag}", s.remote_prefix)));

    let pulled = with_arch("aarch64", &["pull", "multi"]);
    pulled.status(1);
    let error = format!(
        "error: multi: the registry's {arm64} is for linux/amd64, not linux/arm64: it was pushed for the wrong \
         architecture; nothing was tagged"
    );
    assert!(pulled.stderr_lines().contains(&error.as_str()), "{pulled}");
    assert_eq!(image_id(&arm64), None, "the pull left its name on the wrong image");
    assert!(!s.local_names().iter().any(|n| n.contains(&arm_tag)), "{:?}", s.local_names());

    let loaded = with_arch("aarch64", &["load", "multi", "--json"]);
    let log = s.log_for("aarch64", "multi");
    assert_eq!(loaded.success().outcomes(), [outcome("multi", &arm_tag, "built", Some(&log))], "{loaded}");
    assert_eq!(image_arch(&format!("{}:latest", s.local("multi"))), "arm64");
}

/// A local prefix without a registry domain: podman keeps such names under
/// `localhost/`; they are found as present all the same, on both engines.
#[test]
fn a_local_prefix_without_a_domain_is_found_as_present() {
    let mut s = Sandbox::new("no-domain");
    s.local_prefix = format!("xtask-test-nodomain/{}", s.id);
    s.scratch_image("plain");
    s.xtask(&["load", "plain"]).success();
    let tag = s.tag("plain");
    let recorder = s.recording_engine();
    let warm = run(s.cmd(&["load", "plain", "--json"]).env("PATH", &recorder.path));
    assert_eq!(warm.success().outcomes(), [outcome("plain", &tag, "present", None)], "{warm}");
    let calls = recorder.take();
    assert!(calls.iter().all(|c| !c.contains(" tag ") && !c.contains(" build ")), "{calls:#?}");
}

/// An architecture the tool does not know is a command-line error, from
/// the flag or from `ARCH`, listing the ones it knows.
#[test]
fn an_unknown_architecture_is_a_usage_error() {
    let s = Sandbox::new("bad-arch");
    let values = "[possible values: x86_64, amd64, aarch64, arm64]";
    let flag = s.xtask(&["--arch", "sparc", "list-all-images"]);
    flag.status(2);
    assert_eq!(
        flag.stderr,
        format!(
            "error: invalid value 'sparc' for '--arch <ARCH>'\n  {values}\n\nFor more information, try '--help'.\n"
        ),
        "{flag}"
    );
    let env = run(s.cmd(&["load", "x"]).env("ARCH", "x86-64"));
    env.status(2);
    assert!(env.stderr.starts_with("error: invalid value 'x86-64' for '--arch <ARCH>'"), "{env}");
    assert!(env.stderr.contains(values), "{env}");
}

/// A buildx builder with a driver other than `docker` keeps what it builds
/// out of the daemon's image store unless told `--load`: the build passes
/// it. No such builder runs here (its driver needs an image from a public
/// registry), so a stand-in `docker` plays one and records what it is asked.
#[test]
fn a_buildx_builder_without_the_image_store_is_told_to_load() {
    let s = Sandbox::new("buildx-driver");
    s.write("x/Dockerfile", "FROM scratch\n");
    let bin = s.path().join("fake-bin");
    fs::create_dir_all(&bin).unwrap();
    let calls = s.path().join("calls");
    let id = format!("sha256:{}", "ab".repeat(32));
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$*" >> '{calls}'
case "$1" in
version) echo "28.2.2 28.2.2" ;;
buildx) printf 'Name:   remote\nDriver: docker-container\n' ;;
images) ;;
image) printf '[{{"Id":"{id}","Os":"linux","Architecture":"amd64"}}]\n' ;;
pull) echo "Error response from daemon: manifest unknown" >&2; exit 1 ;;
build) while [ $# -gt 0 ]; do [ "$1" = --iidfile ] && printf '{id}' > "$2"; shift; done ;;
tag) ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#,
        calls = calls.display()
    );
    fs::write(bin.join("docker"), script).unwrap();
    fs::set_permissions(bin.join("docker"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let built = run(s
        .cmd(&["load", "x", "--json"])
        .env("PATH", path)
        .env("IMAGES_ENGINE", "docker")
        .env("ARCH", "x86_64")
        .env_remove("DOCKER_CONFIG")
        .env_remove("DOCKER_BUILDKIT"));
    built.success();
    let outcomes = built.images();
    assert_eq!(outcomes[0]["action"], "built", "{built}");
    assert_eq!(outcomes[0]["builder"], "buildkit", "{built}");
    assert!(built.stderr_lines().contains(&"building with BuildKit (buildx, driver docker-container)"), "{built}");
    let calls = fs::read_to_string(&calls).unwrap();
    let build = calls.lines().find(|l| l.starts_with("build ")).unwrap_or_else(|| panic!("{calls}"));
    let dir = s.images.join("x");
    assert!(
        build.starts_with(
            "build --progress=plain --build-arg BUILDKIT_INLINE_CACHE=1 --load --platform linux/amd64 --iidfile "
        ),
        "{build}"
    );
    assert!(build.ends_with(&format!(" -f {}/Dockerfile {}", dir.display(), dir.display())), "{build}");
    // Named only once built and checked: the built image, by its ID, each name.
    let tags: Vec<&str> = calls.lines().filter(|l| l.starts_with("tag ")).collect();
    let tag = s.tag("x");
    assert_eq!(
        tags,
        [
            format!("tag {id} {}:{tag}", s.remote("x")),
            format!("tag {id} {}:{tag}", s.local("x")),
            format!("tag {id} {}:latest", s.local("x")),
        ]
    );
}

/// `push` with a buildx builder that has no local image store builds
/// straight into the registry, by digest, checks the registry's copy, then
/// tags it there: nothing goes through the local store. No such builder runs
/// here, so a stand-in `docker` plays one: it builds with the real docker,
/// pushes under a name of its own to get a digest, and reports that digest
/// as buildx's metadata file would.
#[test]
fn a_buildx_builder_without_the_image_store_pushes_straight_to_the_registry() {
    let s = Sandbox::new("buildx-push");
    s.scratch_image("x");
    let bin = s.path().join("fake-bin");
    fs::create_dir_all(&bin).unwrap();
    let calls = s.path().join("calls");
    let real = String::from_utf8(Command::new("which").arg("docker").output().unwrap().stdout).unwrap();
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$*" >> '{calls}'
real='{real}'
case "$1" in
version) echo "28.2.2 28.2.2" ;;
images) ;;
buildx)
    [ "$2" = inspect ] && {{ printf 'Name:   remote\nDriver: docker-container\n'; exit 0; }}
    shift 2
    while [ $# -gt 1 ]; do
        case "$1" in
        --metadata-file) meta=$2; shift ;;
        --output) name=$(printf '%s' "$2" | sed 's/.*name=\([^,]*\).*/\1/'); shift ;;
        -f) file=$2; shift ;;
        esac
        shift
    done
    id=$(DOCKER_BUILDKIT=0 "$real" build -q -f "$file" "$1") || exit 1
    "$real" tag "$id" "$name:stand-in" && "$real" push -q "$name:stand-in" >/dev/null || exit 1
    digest=$("$real" image inspect --format '{{{{index .RepoDigests 0}}}}' "$name:stand-in" | sed 's/.*@//')
    "$real" rmi "$name:stand-in" >/dev/null
    printf '{{"containerimage.digest": "%s"}}' "$digest" > "$meta" ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#,
        calls = calls.display(),
        real = real.trim()
    );
    fs::write(bin.join("docker"), script).unwrap();
    fs::set_permissions(bin.join("docker"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let tag = s.tag("x");
    let pushed = run(s
        .cmd(&["push", "x", "--json"])
        .env("PATH", path)
        .env("IMAGES_ENGINE", "docker")
        .env("ARCH", "x86_64")
        .env_remove("DOCKER_CONFIG")
        .env_remove("DOCKER_BUILDKIT"));
    pushed.success();
    let images = pushed.images();
    assert_eq!(
        (images[0]["action"].as_str(), images[0]["tag"].as_str()),
        (Some("pushed"), Some(tag.as_str())),
        "{pushed}"
    );
    let calls = fs::read_to_string(&calls).unwrap();
    let remote = s.remote("x");
    let build = calls.lines().find(|l| l.starts_with("buildx build ")).unwrap_or_else(|| panic!("{calls}"));
    let dir = s.images.join("x");
    assert!(
        build.starts_with(
            "buildx build --progress=plain --build-arg BUILDKIT_INLINE_CACHE=1 --platform linux/amd64 --metadata-file "
        ),
        "{build}"
    );
    assert!(
        build.ends_with(&format!(
            " --output type=image,name={remote},push-by-digest=true,name-canonical=true,push=true -f {}/Dockerfile {}",
            dir.display(),
            dir.display()
        )),
        "{build}"
    );
    // Labelled as any build is: here, built on no external base.
    assert!(build.contains(&format!(" --label local.xtask-test.{}.bases= ", s.id)), "{build}");
    // Nothing through the local store: no tag, push or pull of the engine.
    assert!(
        calls.lines().all(|l| !l.starts_with("tag ") && !l.starts_with("push ") && !l.starts_with("pull ")),
        "{calls}"
    );
    // The registry has the tag, on the very manifest the builder pushed.
    let by_tag = manifest_digests(&format!("{remote}:{tag}"));
    let by_stand_in = manifest_digests(&format!("{remote}:stand-in"));
    assert_eq!(by_tag, by_stand_in);
    assert_eq!(registry_platform(&format!("{remote}:{tag}")), "linux/amd64");
    assert_eq!(s.local_names(), Vec::<String>::new());
}
