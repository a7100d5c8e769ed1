//! The one way the runner makes a directory for a unix socket that only its own user
//! may reach (the local control socket, the fault-control socket).

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub use crate::uid::own_uid;

/// Creates `dir` if needed and makes it 0700; a path that is not a directory owned by
/// us (a symlink, another user's directory) is refused, naming what it was for.
pub fn ensure(dir: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != own_uid() {
        bail!(
            "{} is not a directory owned by uid {}; refusing to put the {what} there (remove it)",
            dir.display(),
            own_uid()
        );
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private (0700)", dir.display()))
}
