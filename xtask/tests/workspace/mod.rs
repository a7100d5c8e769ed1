//! What the tidy checks share: the workspace root, its files, its members.

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ lives under the workspace root").to_path_buf()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The members of the root Cargo.toml's `[workspace] members = [...]`.
pub fn members(root_toml: &str) -> Vec<String> {
    let start = root_toml.find("members = [").expect("a members list in Cargo.toml");
    let list = &root_toml[start..];
    let list = &list[..list.find(']').expect("the members list ends")];
    list.split('"').skip(1).step_by(2).map(str::to_string).collect()
}
