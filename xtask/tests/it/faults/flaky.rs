//! A registry that fails: through a proxy that answers 503, resets or stalls
//! a share of the connections, the tool still pushes, pulls and checks
//! within bounded time; when every request fails it gives up quickly with
//! one line naming the registry; and a registry killed in the middle of a
//! push never ends up with a half-pushed tag.

use std::time::{Duration, Instant};

use super::inspect::{remote_state, Remote};
use super::proxy::{Fault, Proxy};
use super::state::{check_local, check_registry, hermetic_tree, repository, Fingerprints, Names};
use super::Report;
use crate::rng::Rng;
use crate::support::{docker, untag, Registry, Run, Running, Sandbox};

/// The images pushed and pulled through the flaky registry: every push and
/// pull may need several tries, so only a few, one built on another.
const FEW: [&str; 3] = ["a", "b", "top"];
/// Faults per thousand connections while the registry is merely flaky.
const FLAKY_RATE: u32 = 200;
const LIMIT: Duration = Duration::from_secs(150);
/// How long the tool may take to give up on a registry that always fails.
const GIVE_UP: Duration = Duration::from_secs(30);
/// How long `load-all-images` may take to build everything when the
/// registry always fails.
const OFFLINE: Duration = Duration::from_secs(60);
/// Bytes of noise in the image pushed while the registry is killed, and the
/// upload speed that makes that push last about two seconds.
const BIG: usize = 8 << 20;
const SLOW: u64 = 4 << 20;
/// How long a push may take to end once its registry died under it. The
/// engine retries a layer upload for about a minute on its own.
const DYING: Duration = Duration::from_secs(120);

/// Runs `body`, counting the faults the proxy injected meanwhile, even
/// when `body` panics.
fn counting<T>(r: &mut Report, proxy: &Proxy, body: impl FnOnce() -> T) -> T {
    let (u0, x0, d0) = proxy.counts().faults();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let (u, x, d) = proxy.counts().faults();
    r.fault("503 answers", u - u0);
    r.fault("connection resets", x - x0);
    r.fault("stalled requests", d - d0);
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn actions(run: &Run) -> Vec<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    value["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images: {run}"))
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_string(), o["action"].as_str().unwrap().to_string()))
        .collect()
}

fn all(run: &Run, action: &str) -> Result<(), String> {
    let got = actions(run);
    if got.len() == FEW.len() && got.iter().all(|(_, a)| a == action) {
        Ok(())
    } else {
        Err(format!("expected every image {action}, got {got:?}\n{run}"))
    }
}

/// Push, pull and look up through a registry that fails a share of the
/// connections, then one that fails them all.
pub fn flaky(report: &mut Report, rng: &mut Rng) {
    let mut sandbox = Sandbox::sealed("flaky");
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(registry_dir.path(), None);
    let proxy = Proxy::start(&registry.addr, rng.next());
    sandbox.use_registry(&proxy.addr);
    let tags = hermetic_tree(&sandbox, &FEW, 0);
    let mut prints = Fingerprints::default();

    report.case("flaky registry (20% of connections fail or stall): push, pull, push again", |r| {
        proxy.set_per_request(false);
        proxy.set_faults(FLAKY_RATE, &[Fault::Unavailable, Fault::Reset, Fault::Delay]);
        counting(r, &proxy, || {
            let pushed = sandbox.xtask_within(&["push-all-images", "--json"], LIMIT);
            pushed.success();
            all(&pushed, "pushed")?;
            check_local(&sandbox, &tags, &mut prints, Names::All)?;
            check_registry(&registry.addr, &sandbox.remote_prefix, &tags, &prints, true, None)?;
            sandbox.untag_all();
            let loaded = sandbox.xtask_within(&["load-all-images", "--json"], LIMIT);
            loaded.success();
            all(&loaded, "pulled")?;
            check_local(&sandbox, &tags, &mut prints, Names::All)?;
            let again = sandbox.xtask_within(&["push-all-images", "--json"], LIMIT);
            again.success();
            all(&again, "skipped")
        })
    });

    report.case("dead registry (every request fails): push-all gives up quickly and clearly", |r| {
        proxy.set_per_request(true);
        proxy.set_faults(1000, &[Fault::Unavailable, Fault::Reset]);
        let run = counting(r, &proxy, || sandbox.xtask_within(&["push-all-images"], LIMIT));
        run.status(1);
        quick_and_clear(&run, &proxy.addr)
    });

    report.case("dead registry (every request fails): pull gives up quickly and clearly", |r| {
        let run = counting(r, &proxy, || sandbox.xtask_within(&["pull", "a"], LIMIT));
        run.status(1);
        quick_and_clear(&run, &proxy.addr)
    });

    report.case("dead registry (every request fails): load-all-images builds instead", |r| {
        sandbox.untag_all();
        let run = counting(r, &proxy, || sandbox.xtask_within(&["load-all-images", "--json"], LIMIT));
        run.success();
        all(&run, "built")?;
        if run.took > OFFLINE {
            return Err(format!("took {:.1}s to build what it could not pull: {run}", run.took.as_secs_f64()));
        }
        check_local(&sandbox, &tags, &mut prints, Names::All)
    });
}

/// Ended within [`GIVE_UP`] with one error line naming the registry.
fn quick_and_clear(run: &Run, registry: &str) -> Result<(), String> {
    if run.took > GIVE_UP {
        return Err(format!("took {:.1}s to give up: {run}", run.took.as_secs_f64()));
    }
    let errors = run.errors();
    if errors.len() != 1 || !errors[0].contains(registry) {
        return Err(format!("expected one error line naming {registry}: {run}"));
    }
    Ok(())
}

/// How a trial kills the registry during `push b`.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// At a random moment while the big layer is uploaded.
    DuringUpload,
    /// While the manifest is on its way, before the registry sees it.
    BeforeManifest,
    /// As soon as the manifest goes to the registry.
    AsManifestArrives,
    /// At a random moment after the push started.
    Random,
}

/// The registry killed at chosen moments of a push, each trial with a
/// registry of its own.
pub fn dying(report: &mut Report, rng: &mut Rng) {
    let mut sandbox = Sandbox::sealed("dying");
    let tags = hermetic_tree(&sandbox, &["b"], BIG);
    let tag = tags["b"].clone();
    let mut prints = Fingerprints::default();

    // The registry comes back two seconds after it died, while the push
    // still tries; or only once the push has given up. (Not after a death
    // during the upload: the engine itself retries the upload for about a
    // minute before the push gives up.)
    let back_soon = Some(Duration::from_secs(2));
    let trials = [
        (Moment::DuringUpload, back_soon),
        (Moment::BeforeManifest, None),
        (Moment::AsManifestArrives, None),
        (Moment::Random, back_soon),
    ];
    for (k, (moment, back)) in trials.into_iter().enumerate() {
        let when = match back {
            Some(after) => format!("back after {}s", after.as_secs()),
            None => "back after the push ended".into(),
        };
        report.case(&format!("registry killed mid-push ({moment:?}, {when}): the tag is whole or absent"), |r| {
            if k == 0 {
                sandbox.xtask_within(&["rebuild", "b"], LIMIT).success();
            }
            // A registry of the trial's own, so that no layer is there yet.
            let storage = sandbox.path().join(format!("registry{k}"));
            let mut registry = Registry::start(&storage, None);
            let proxy = Proxy::start(&registry.addr, rng.next());
            sandbox.use_registry(&proxy.addr);
            let repo = repository(&sandbox.remote_prefix, "b");
            proxy.set_throttle(SLOW);
            if let Moment::BeforeManifest = moment {
                proxy.set_hold(Some((&["PUT ", "/manifests/"], Duration::from_secs(1))));
            }
            let mut push = sandbox.spawn(&["push", "b"]);
            let killed = wait_for(&mut push, rng, moment, &proxy);
            registry.kill();
            if killed {
                r.fault("registry killed", 1);
            }
            proxy.set_throttle(0);
            proxy.set_hold(None);
            if let Some(after) = back {
                std::thread::sleep(after);
                registry.restart();
            }
            let run = push.wait(LIMIT);
            if back.is_none() {
                registry.restart();
            }
            if !killed {
                return Err(format!("the push ended before the moment to kill the registry came: {run}"));
            }
            if run.took > DYING {
                return Err(format!("took {:.1}s to end: {run}", run.took.as_secs_f64()));
            }
            // Either outcome is fine, as long as it is said plainly.
            match run.code {
                Some(0) => {}
                Some(1) => {
                    if run.errors().len() != 1 || !run.errors()[0].contains(&proxy.addr) {
                        return Err(format!("expected one error line naming the registry: {run}"));
                    }
                }
                _ => return Err(format!("unexpected end: {run}")),
            }
            // docker-registry writes its files in place: killed mid-write, it
            // may leave an empty one, which it later serves as if whole. That
            // is the registry's failing, not the tool's: say so, and stop.
            let registry_damaged = |r: &mut Report, what: &str| -> Result<(), String> {
                let empty = registry.empty_files();
                if empty.is_empty() {
                    return Err(what.to_string());
                }
                r.note(format!("{what}; the killed docker-registry left empty files: {empty:?}"));
                Ok(())
            };
            match remote_state(&registry.addr, &repo, &tag, None) {
                Remote::Absent => {}
                Remote::Broken(why) => return registry_damaged(r, &format!("{repo}:{tag} is half there: {why}")),
                Remote::Complete(_) => {
                    // Whole: a pull of it works.
                    let direct = format!("{}/{repo}:{tag}", registry.addr);
                    let pulled = docker(&["pull", &direct]);
                    if !pulled.status.success() {
                        return Err(format!(
                            "{direct} is listed but cannot be pulled: {}",
                            String::from_utf8_lossy(&pulled.stderr)
                        ));
                    }
                    untag(&[direct]);
                }
            }
            // And the next push completes it.
            sandbox.xtask_within(&["push", "b"], LIMIT).success();
            check_local(&sandbox, &tags, &mut prints, Names::Any)?;
            match check_registry(&registry.addr, &sandbox.remote_prefix, &tags, &prints, true, None) {
                Ok(_) => Ok(()),
                Err(e) => registry_damaged(r, &format!("after a push that succeeded: {e}")),
            }
        });
    }
}

/// Waits for the moment to kill the registry; false if the push ended first.
fn wait_for(push: &mut Running, rng: &mut Rng, moment: Moment, proxy: &Proxy) -> bool {
    let deadline = Instant::now() + LIMIT;
    let uploading = |p: &Proxy| p.requests().iter().any(|l| l.contains("/blobs/uploads/"));
    let manifest = |p: &Proxy| p.requests().iter().any(|l| l.starts_with("PUT ") && l.contains("/manifests/"));
    let mut delay = None;
    while Instant::now() < deadline && push.running() {
        let now = match moment {
            Moment::DuringUpload => {
                if delay.is_none() && uploading(proxy) {
                    delay = Some(Instant::now() + Duration::from_millis(200 + rng.below(1300) as u64));
                }
                delay.is_some_and(|d| Instant::now() >= d)
            }
            Moment::BeforeManifest => proxy.held() > 0,
            Moment::AsManifestArrives => manifest(proxy),
            Moment::Random => {
                let at = *delay.get_or_insert_with(|| Instant::now() + Duration::from_millis(rng.below(2000) as u64));
                Instant::now() >= at
            }
        };
        if now {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}
