//! `register-cross`: lets this host run another architecture's binaries
//! through qemu, as builds for it need.

use anyhow::Result;

use crate::config::Settings;
use crate::engine::cross::{self, Registered};

pub fn run(settings: &Settings) -> Result<()> {
    match cross::register(settings.arch)? {
        Registered::NotNeeded => eprintln!("{} is this host's architecture: nothing to register", settings.arch),
        Registered::AlreadyThere => eprintln!("{} binaries already run here through qemu", settings.arch),
        Registered::Registered(from) => {
            eprintln!("{} binaries now run here through qemu (from {})", settings.arch, from.display())
        }
    }
    Ok(())
}
