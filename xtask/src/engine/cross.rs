//! Cross-building: making foreign-architecture binaries runnable through the
//! host's own qemu-user-static binfmt configuration. Nothing is pulled: the
//! legacy way ran a privileged container from a public registry.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::model::Arch;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
const BINFMT_CONFIGS: &[&str] = &["/usr/lib/binfmt.d", "/etc/binfmt.d", "/usr/share/binfmt"];

/// The binfmt handler name qemu-user-static installs for an architecture.
fn handler(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-x86_64",
        Arch::Aarch64 => "qemu-aarch64",
    }
}

/// What `register-cross` did, for the user.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    NotNeeded,
    AlreadyThere,
    Registered(PathBuf),
}

/// Makes `arch` binaries runnable on this host, when it is not the host's.
pub fn register(arch: Arch) -> Result<Registered> {
    if arch == Arch::host()? {
        return Ok(Registered::NotNeeded);
    }
    let name = handler(arch);
    let root = Path::new(BINFMT);
    if !root.join("register").exists() {
        let sh = Shell::new()?;
        cmd!(sh, "mount -t binfmt_misc binfmt_misc {BINFMT}").quiet().ignore_stderr().run().with_context(|| {
            format!("cannot mount binfmt_misc on {BINFMT}: run `sudo cargo xtask register-cross` or `sudo mount -t binfmt_misc binfmt_misc {BINFMT}`")
        })?;
    }
    let entry = root.join(name);
    if let Ok(state) = std::fs::read_to_string(&entry) {
        if state.starts_with("enabled") {
            return Ok(Registered::AlreadyThere);
        }
        std::fs::write(&entry, "1").with_context(|| format!("cannot enable {}: run as root", entry.display()))?;
        return Ok(Registered::Registered(entry));
    }
    let Some(config) = BINFMT_CONFIGS.iter().map(|d| Path::new(d).join(format!("{name}.conf"))).find(|p| p.exists())
    else {
        bail!("qemu for {arch} is not installed: install qemu-user-static (apt-get install qemu-user-static), then run `cargo xtask register-cross`");
    };
    let text = std::fs::read_to_string(&config).with_context(|| format!("cannot read {}", config.display()))?;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        std::fs::write(root.join("register"), line).with_context(|| {
            format!("cannot register {name} from {}: run `sudo cargo xtask register-cross`", config.display())
        })?;
    }
    if !entry.exists() {
        bail!("registering {name} from {} had no effect", config.display());
    }
    Ok(Registered::Registered(config))
}
