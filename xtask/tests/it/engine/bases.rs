//! Images built `FROM` another image of the catalog, end to end: a pulled
//! image carries its base's layers, so the base is brought only for a build
//! (a failed pull's too, then); a push leaves the base in the registry with
//! what is built on it; every outcome says what happened to the base as well;
//! the builder is named only when something builds; and the bytes built are
//! those of the layers a build made.

use serde_json::{json, Value};

use crate::support::{
    base_image, base_image_arm64, engine, engine_ok, image_id, outcome, registry_has, run_in, untag, Engine, Registry,
    Sandbox,
};

/// `base`, built on the test base image (which has a shell), and `app`,
/// built `FROM` it.
fn family(test: &str) -> Sandbox {
    let s = Sandbox::new(test);
    write_family(&s);
    s
}

fn write_family(s: &Sandbox) {
    s.write("base/Dockerfile", format!("FROM {}\nCOPY f /f\n", base_image()));
    s.write("base/f", format!("base {}\n", s.id));
    s.write("app/Dockerfile", format!("FROM {}:latest\nCOPY g /g\n", s.local("base")));
    s.write("app/g", "app\n");
}

/// Pushes a local name with the engine, behind the tool's back.
fn push_by_hand(reference: &str) {
    let mut args = vec!["push"];
    if engine() == Engine::Podman {
        args.push("--tls-verify=false");
    }
    args.push(reference);
    engine_ok(&args);
}

/// The `reason` of each `--json` outcome, in order.
fn reasons(images: &[Value]) -> Vec<&str> {
    images.iter().map(|o| o["reason"].as_str().unwrap_or("-")).collect()
}

fn size(reference: &str) -> u64 {
    engine_ok(&["image", "inspect", "--format", "{{.Size}}", reference]).trim().parse().unwrap()
}

#[test]
fn a_pulled_image_brings_no_base_and_a_failed_pull_brings_it_first() {
    let s = family("lazy-base");
    let (base, app) = (s.tag("base"), s.tag("app"));
    let app_remote = format!("{}:{app}", s.remote("app"));
    let base_latest = format!("{}:latest", s.local("base"));
    // The registry has app, and not the base it was built on.
    s.xtask(&["rebuild", "app"]).success();
    push_by_hand(&app_remote);
    s.untag_all();
    assert!(!registry_has(&format!("{}:{base}", s.remote("base"))));

    let plan = s.xtask(&["load", "app", "--dry-run"]);
    assert_eq!(
        plan.success().stdout,
        format!(
            "app   {app}  pull, else build  (in the registry)\n\
             base  {base}  only if app is built: build  (base of app; not in the registry)\n"
        )
    );
    let plan = s.xtask(&["load", "app", "--dry-run", "--json"]);
    let document: Value = serde_json::from_str(&plan.success().stdout).unwrap();
    super::check_schema("plan", &document);
    let entries = document["plan"].as_array().unwrap();
    assert_eq!(
        (&entries[0]["after"], &entries[0]["build_after"], &entries[1]["after"], &entries[1]["only_if_built"]),
        (&json!([]), &json!(["base"]), &json!([]), &json!(["app"])),
        "{plan}"
    );
    let pulled = s.xtask(&["load", "app", "--json"]);
    assert_eq!(pulled.success().outcomes(), [outcome("app", &app, "pulled", Some(&s.log("app")))], "{pulled}");
    assert!(!pulled.stderr.contains("building with"), "a run that only pulls names the builder: {pulled}");
    assert!(!pulled.stdout.contains("\"builder\""), "{pulled}");
    assert_eq!(image_id(&base_latest), None, "the base was brought for a pull: {pulled}");
    let app_latest = format!("{}:latest", s.local("app"));
    assert_eq!(run_in(&app_latest, &["cat", "/f", "/g"]), format!("base {}\napp\n", s.id));

    // The registry's app is for another architecture: its pull fails, and
    // the base is brought then, before the build the pull falls back to.
    s.untag_all();
    engine_ok(&["tag", &base_image_arm64(), &app_remote]);
    push_by_hand(&app_remote);
    untag(std::slice::from_ref(&app_remote));
    let built = s.xtask(&["load", "app", "--json"]);
    assert_eq!(
        built.success().outcomes(),
        [outcome("app", &app, "built", Some(&s.log("app"))), outcome("base", &base, "built", Some(&s.log("base")))],
        "{built}"
    );
    assert_eq!(reasons(&built.images()), ["in the registry; the pull failed", "base of app; not in the registry"]);
    let lines = built.stderr_lines();
    let failed = lines.iter().position(|l| l.starts_with("app: pull failed (")).unwrap_or_else(|| panic!("{built}"));
    let said: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].starts_with("building with ")).collect();
    assert!(said.len() == 1 && failed < said[0], "the builder is named once, when the first build starts: {built}");
    assert_eq!(run_in(&app_latest, &["cat", "/f", "/g"]), format!("base {}\napp\n", s.id));
    assert!(image_id(&base_latest).is_some());
}

#[test]
fn push_leaves_the_bases_in_the_registry_for_a_sibling_to_build_on() {
    let s = family("push-bases");
    s.write("sib/Dockerfile", format!("FROM {}:latest\nCOPY h /h\n", s.local("base")));
    s.write("sib/h", "sib\n");
    let (base, app, sib) = (s.tag("base"), s.tag("app"), s.tag("sib"));
    let why = "the registry lacks it and it is not present locally";

    let plan = s.xtask(&["push", "app", "--dry-run"]);
    assert_eq!(
        plan.success().stdout,
        format!("app   {app}  build, then push  ({why})\nbase  {base}  build, then push  (base of app; {why})\n")
    );
    let pushed = s.xtask(&["push", "app", "--json"]);
    assert_eq!(
        pushed.success().outcomes(),
        [outcome("app", &app, "pushed", Some(&s.log("app"))), outcome("base", &base, "pushed", Some(&s.log("base")))],
        "{pushed}"
    );
    assert!(registry_has(&format!("{}:{app}", s.remote("app"))));
    assert!(registry_has(&format!("{}:{base}", s.remote("base"))), "push app left its base out of the registry");

    // Another machine, with nothing: the sibling is built on the base pulled.
    s.untag_all();
    let plan = s.xtask(&["load", "sib", "--dry-run"]);
    assert_eq!(
        plan.success().stdout,
        format!(
            "base  {base}  pull, else build  (base of sib; in the registry)\n\
             sib   {sib}  build  (not in the registry)\n"
        )
    );
    let loaded = s.xtask(&["load", "sib", "--json"]);
    assert_eq!(
        loaded.success().outcomes(),
        [outcome("base", &base, "pulled", Some(&s.log("base"))), outcome("sib", &sib, "built", Some(&s.log("sib")))],
        "{loaded}"
    );
    assert_eq!(run_in(&format!("{}:latest", s.local("sib")), &["cat", "/f", "/h"]), format!("base {}\nsib\n", s.id));
}

#[test]
fn a_base_is_reported_as_what_it_is_and_the_registry_as_what_it_said() {
    let mut s = Sandbox::new("true-outcomes");
    let mut registry = Registry::start(s.path(), None);
    s.use_registry(&registry.addr);
    write_family(&s);
    let (base, app) = (s.tag("base"), s.tag("app"));
    // The base is here, and the registry lacks it.
    s.xtask(&["load", "base"]).success();

    // `cache`: what app's build starts from, once there was one.
    let check = |lacks: &str, cache: &str| {
        let plan = s.xtask(&["test", "app", "--dry-run"]);
        assert_eq!(
            plan.success().stdout,
            format!("app   {app}  build  ({lacks}{cache})\nbase  {base}  nothing to do  (base of app; present)\n")
        );
        let tested = s.xtask(&["test", "app", "--json"]);
        assert_eq!(
            tested.success().outcomes(),
            [outcome("app", &app, "built", Some(&s.log("app"))), outcome("base", &base, "present", None)],
            "{tested}"
        );
        assert_eq!(reasons(&tested.images()), [lacks, "base of app; present"], "{tested}");
        let row: Vec<&str> = tested
            .stderr_lines()
            .into_iter()
            .find(|l| l.starts_with("base "))
            .unwrap_or_else(|| panic!("no row for the base: {tested}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[..3], ["base", base.as_str(), "present"], "{tested}");
    };
    check("the registry lacks it", "");
    registry.stop();
    check("the registry cannot be asked", &format!("; cache from {}:latest", s.local("app")));
}

#[test]
fn the_bytes_built_are_those_of_the_layers_built() {
    let s = family("own-bytes");
    let loaded = s.xtask(&["load", "app"]);
    loaded.success();
    // base's own layer, then app's: not the test base image's below them.
    let own = size(&format!("{}:latest", s.local("app"))) - size(&base_image());
    let expected = format!("bytes: 0 B pulled, {} built, 0 B pushed", xtask::report::human_bytes(own));
    assert!(loaded.stderr_lines().contains(&expected.as_str()), "{expected}: {loaded}");
    assert!(own < size(&base_image()), "the test images are not what this test needs");
}
