//! The hermetic tree most cases work on, and the checks that the engine and
//! registry hold exactly what the tree says: every image under its local
//! names and its remote name with the current tag, each pointing at content
//! that matches, and no name at all with a tag of other content.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::inspect::{file_in, inspect, remote_state, Remote};
use crate::rng::Rng;
use crate::support::{arch, Sandbox};

/// Paths of the hermetic tree's images; `top` is built on `a`, and
/// `grp/c/nested` lies inside `grp/c`'s build context.
pub const PATHS: [&str; 6] = ["a", "b", "d", "grp/c", "grp/c/nested", "top"];

/// Writes the images `paths` of the hermetic tree (some of [`PATHS`]) and
/// returns their tags: images `FROM scratch`, each holding a file whose
/// content is unique to the sandbox and the image, and `top`, built `FROM`
/// the local name of `a`. `filler` bytes of noise go into `b`.
pub fn hermetic_tree(sandbox: &Sandbox, paths: &[&str], filler: usize) -> BTreeMap<String, String> {
    for &path in paths {
        assert!(PATHS.contains(&path), "{path} is not an image of the hermetic tree");
        if path == "top" {
            sandbox.write("top/Dockerfile", format!("FROM {}:latest\nCOPY id /top\n", sandbox.local("a")));
        } else {
            sandbox.write(&format!("{path}/Dockerfile"), "FROM scratch\nCOPY id /id\n");
        }
        sandbox.write(&format!("{path}/id"), marker(sandbox, path));
    }
    if filler > 0 {
        let mut rng = Rng::new(filler as u64);
        let noise: Vec<u8> = (0..filler / 8).flat_map(|_| rng.next().to_le_bytes()).collect();
        sandbox.write("b/Dockerfile", "FROM scratch\nCOPY id /id\nCOPY noise /noise\n");
        sandbox.write("b/noise", noise);
    }
    sandbox.tags(paths)
}

fn marker(sandbox: &Sandbox, path: &str) -> String {
    format!("{} {path}\n", sandbox.id)
}

/// What each image's content is known to be: its uncompressed layer
/// digests, recorded once its files were read and found right.
#[derive(Default)]
pub struct Fingerprints(BTreeMap<String, Vec<String>>);

impl Fingerprints {
    /// Checks the content of `reference`, an image of `path`: against the
    /// recorded layers, or by reading its files the first time.
    fn check(&mut self, sandbox: &Sandbox, path: &str, reference: &str, layers: &[String]) -> Result<(), String> {
        if let Some(known) = self.0.get(path) {
            if known != layers {
                return Err(format!("{reference} has layers {layers:?}, not the {known:?} of {path}"));
            }
            return Ok(());
        }
        let (file, want) =
            if path == "top" { ("/top", marker(sandbox, "top")) } else { ("/id", marker(sandbox, path)) };
        let got = file_in(reference, file);
        if got.as_deref() != Some(want.as_bytes()) {
            return Err(format!(
                "{reference}: {file} holds {:?}, not {want:?}",
                got.as_deref().map(String::from_utf8_lossy)
            ));
        }
        if path == "top" {
            let base = file_in(reference, "/id");
            if base.as_deref() != Some(marker(sandbox, "a").as_bytes()) {
                return Err(format!("{reference} is not built on a: /id holds {base:?}"));
            }
        }
        self.0.insert(path.to_string(), layers.to_vec());
        Ok(())
    }
}

/// What the checks saw that is worth saying but is not a failure.
pub static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Which local names every image must have.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// None in particular: whatever is there must be right.
    Any,
    /// `<local>:<tag>` and `<local>:latest`, the same image: what `load`
    /// promises.
    Local,
    /// Those and `<remote>:<tag>`: what a pull or a build leaves.
    All,
}

/// Every local name of the sandbox: each image present under the names
/// `wanted`, and whatever names exist carry the current tag (or `latest`)
/// and the content that goes with it.
pub fn check_local(
    sandbox: &Sandbox,
    tags: &BTreeMap<String, String>,
    prints: &mut Fingerprints,
    wanted: Names,
) -> Result<(), String> {
    let names = sandbox.tagged_names();
    let seen = inspect(&names);
    let mut problems = Vec::new();
    if wanted != Names::Any {
        let all = wanted == Names::All;
        for (path, tag) in tags {
            let mut wanted = vec![format!("{}:{tag}", sandbox.local(path)), format!("{}:latest", sandbox.local(path))];
            if all {
                wanted.push(remote_ref(sandbox, path, tag));
            }
            for name in &wanted {
                if !seen.contains_key(name) {
                    problems.push(format!("{name} is missing"));
                }
            }
            if let (Some(t), Some(l)) = (seen.get(&wanted[0]), seen.get(&wanted[1])) {
                if t.0 != l.0 && t.1 == l.1 {
                    // Runs at once each build the image; the engine gives
                    // each build an ID of its own, and each run names its own.
                    NOTES.lock().unwrap().push(format!(
                        "{} and {} are different images of the same content ({} and {})",
                        wanted[0], wanted[1], t.0, l.0
                    ));
                } else if t.0 != l.0 {
                    problems.push(format!("{} is {} but {} is {}", wanted[0], t.0, wanted[1], l.0));
                }
            }
        }
    }
    for name in &names {
        let (repo, tag) = name.rsplit_once(':').unwrap();
        let Some(path) = path_of(sandbox, repo) else {
            problems.push(format!("{name} is not a name of any image of the tree"));
            continue;
        };
        let is_local = repo == sandbox.local(&path);
        if tag != tags[&path] && !(is_local && tag == "latest") {
            problems.push(format!("{name} has a tag other than the current one, {}", tags[&path]));
            continue;
        }
        let Some((_, layers)) = seen.get(name) else { continue };
        if let Err(e) = prints.check(sandbox, &path, name, layers) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The image path a local or remote repository of this sandbox names.
fn path_of(sandbox: &Sandbox, repo: &str) -> Option<String> {
    if let Some(path) = repo.strip_prefix(&format!("{}/", sandbox.local_prefix)) {
        return PATHS.contains(&path).then(|| path.to_string());
    }
    let suffix = format!("_{}", arch());
    PATHS.iter().find(|p| repo.ends_with(&format!("/{p}{suffix}"))).map(|p| p.to_string())
}

fn remote_ref(sandbox: &Sandbox, path: &str, tag: &str) -> String {
    format!("{}:{tag}", sandbox.remote(path))
}

/// The registry repository (without host) of an image under `remote_prefix`.
pub fn repository(remote_prefix: &str, path: &str) -> String {
    let (_, rest) = remote_prefix.split_once('/').unwrap();
    format!("{rest}/{path}_{}", arch())
}

/// What the registry at `addr` holds for each image under `remote_prefix`:
/// when `complete`, every tag must be there; otherwise each must be either
/// absent or whole. Whatever is there must have the content its tag says.
pub fn check_registry(
    addr: &str,
    remote_prefix: &str,
    tags: &BTreeMap<String, String>,
    prints: &Fingerprints,
    complete: bool,
    auth: Option<&str>,
) -> Result<usize, String> {
    let mut problems = Vec::new();
    let mut present = 0;
    for (path, tag) in tags {
        let repo = repository(remote_prefix, path);
        match remote_state(addr, &repo, tag, auth) {
            Remote::Absent if complete => problems.push(format!("the registry lacks {repo}:{tag}")),
            Remote::Absent => {}
            Remote::Broken(why) => problems.push(format!("{repo}:{tag} is half there: {why}")),
            Remote::Complete(layers) => {
                present += 1;
                match prints.0.get(path.as_str()) {
                    Some(known) if *known != layers => {
                        problems.push(format!("{repo}:{tag} has layers {layers:?}, not the {known:?} of {path}"))
                    }
                    _ => {}
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(present)
    } else {
        Err(problems.join("\n"))
    }
}
