//! The engine's store of local images, asked through its CLI: images
//! inspected a few hundred at a time (a few through its API once a build
//! reached it), names and the IDs they stand for, and
//! calls asked again while podman's store changes under them (another
//! process removing an image).

use std::collections::HashMap;

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use super::api::{api_inspect, Api, ApiError};
use super::inspect::InspectedImage;
use super::{EngineCli, ImageDetails};
use crate::config::EngineKind;
use crate::process::{first_line, Output};

/// How often the local images are listed when an image vanishes meanwhile.
const LIST_ATTEMPTS: usize = 5;
/// What podman's listing says when an image vanished under it.
pub(super) const LIST_RACES: &[&str] = &["image not known", "locating item named", "layer not known"];
/// What podman says when its store changed under a call about images that
/// are still there.
const STORE_RACES: &[&str] = &["locating item named", "layer not known"];

/// Images inspected in one engine call: their IDs stay well below the
/// kernel's limit on a command line's length.
pub(super) const INSPECT_AT_ONCE: usize = 20_000;

/// Images inspected through the engine's API, a request each, when no more
/// are asked at once.
const INSPECT_THROUGH_API: usize = 8;

impl EngineCli {
    /// Names (as [`Engine::image_names`](super::Engine::image_names) lists them) -> image ID, each also
    /// under the names the engine answers to.
    pub(super) fn by_name(&self, names: Vec<(String, String)>) -> HashMap<String, String> {
        let mut images = HashMap::new();
        for (name, id) in names {
            // podman keeps a name without a registry domain (`local/x`) as
            // `localhost/local/x`, and answers to both.
            if self.kind == EngineKind::Podman {
                if let Some(short) = name.strip_prefix("localhost/") {
                    images.entry(short.to_string()).or_insert_with(|| id.clone());
                }
            }
            images.insert(name, id);
        }
        images
    }

    /// What each of the local images `ids` (or names) is, from their
    /// configs, in one engine call per few hundred. An image that vanished
    /// meanwhile is left out.
    pub(super) fn inspect(&self, ids: &[&str]) -> Result<HashMap<String, ImageDetails>> {
        let mut found = HashMap::new();
        for (asked, image) in self.inspected(ids, 500)? {
            let details = image.details();
            // Under the name asked when the answer is in order; by ID in any case.
            if let Some(asked) = asked {
                found.insert(asked.to_string(), details.clone());
            }
            found.insert(details.id.clone(), details);
        }
        Ok(found)
    }

    /// The images `ids` through `api`, a request each, as [`inspected`]
    /// gives them (an image that is not there left out); `None` when the API
    /// did not answer them all, for the CLI to ask.
    ///
    /// [`inspected`]: EngineCli::inspected
    pub(super) fn inspected_through_api<'a>(
        &self,
        api: &Api,
        ids: &[&'a str],
    ) -> Option<Vec<(Option<&'a str>, InspectedImage)>> {
        let mut found = Vec::new();
        for &id in ids {
            self.echo_api(api, &format!("image inspect {id}"));
            match api_inspect(api, id) {
                Ok(Some(body)) => match serde_json::from_str(&body) {
                    Ok(inspected) => found.push((Some(id), inspected)),
                    Err(e) => {
                        self.echo_api_failed(&format!("its answer did not read: {e}"));
                        return None;
                    }
                },
                Ok(None) => {}
                Err(ApiError::Refused(why) | ApiError::Unreachable(why)) => {
                    self.echo_api_failed(&why);
                    return None;
                }
            }
        }
        Some(found)
    }

    /// The images `ids` as `image inspect` describes them, `at_once` per
    /// call, each with the name it was asked by when the call found them all
    /// (then its answer is in the order asked). An image that vanished
    /// meanwhile is left out.
    pub(super) fn inspected<'a>(
        &self,
        ids: &[&'a str],
        at_once: usize,
    ) -> Result<Vec<(Option<&'a str>, InspectedImage)>> {
        // A few (a build's and its base's, after the build) through the
        // engine's API once a build reached it.
        let api = (ids.len() <= INSPECT_THROUGH_API).then(|| self.ready_api()).flatten();
        if let Some(found) = api.and_then(|api| self.inspected_through_api(api, ids)) {
            return Ok(found);
        }
        let mut found = Vec::new();
        for chunk in ids.chunks(at_once) {
            let out = self.inspect_call(chunk)?;
            // Asked about several, engines print what they found, and fail
            // naming what they did not.
            let parsed: Vec<InspectedImage> = match serde_json::from_str(out.stdout.trim()) {
                Ok(images) => images,
                // podman prints none of them when one is missing: each on its own.
                Err(_) if !out.ok && is_missing(&out.stderr) && chunk.len() > 1 => {
                    for id in chunk {
                        found.extend(self.inspected(&[id], 1)?);
                    }
                    continue;
                }
                Err(_) if !out.ok && is_missing(&out.stderr) => continue,
                Err(_) if !out.ok => bail!("cannot inspect local images: {}", first_line(&out.stderr)),
                Err(e) => bail!("cannot read the engine's image inspection: {e}"),
            };
            found.extend(chunk.iter().zip(parsed).map(|(asked, image)| (out.ok.then_some(*asked), image)));
        }
        Ok(found)
    }

    /// `image inspect` of `ids`, asked again when podman's store changed
    /// under it (another process removing an image), as the listing is.
    pub(super) fn inspect_call(&self, ids: &[&str]) -> Result<Output> {
        let sh = Shell::new()?;
        let program = self.program;
        self.asked_again_on(STORE_RACES, || self.read(cmd!(sh, "{program} image inspect {ids...}")))
    }

    /// Makes `call`, again (up to [`LIST_ATTEMPTS`] in all) while it fails
    /// saying one of `races`: the engine's store changed under it.
    pub(super) fn asked_again_on(&self, races: &[&str], call: impl Fn() -> Result<Output>) -> Result<Output> {
        let mut out = call()?;
        for _ in 1..LIST_ATTEMPTS {
            if out.ok || !races.iter().any(|r| out.stderr.contains(r)) {
                break;
            }
            out = call()?;
        }
        Ok(out)
    }
}

/// Whether an engine said that images it was asked about do not exist.
fn is_missing(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    lower.contains("no such image") || lower.contains("image not known")
}
