//! The Python venv of the grpcio interop client, under `target/`: made with
//! `python3 -m venv`, filled from `tests/python/requirements.txt`, and filled
//! again only when that file changes (a copy of it is kept in the venv).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Makes or refreshes the venv; its interpreter.
pub fn ensure(root: &Path, target: &Path) -> Result<PathBuf, String> {
    let venv = target.join("test-venv");
    let python = venv.join("bin/python");
    let requirements_file = root.join("tests/python/requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_file)
        .map_err(|e| format!("read {}: {e}", requirements_file.display()))?;
    let stamp = venv.join("requirements.installed");
    if !python.exists() {
        crate::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(requirements.as_str()) {
        crate::run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements_file),
        )?;
        std::fs::write(&stamp, &requirements)
            .map_err(|e| format!("write {}: {e}", stamp.display()))?;
    }
    Ok(python)
}
