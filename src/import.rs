//! Import of the existing system's export (filled in by the importer work).

use std::path::Path;

use crate::db::Db;

/// Imports the export in `dir` into `db`; returns a one-line report.
pub async fn run(_db: &Db, _dir: &Path, _progress: bool) -> anyhow::Result<String> {
    anyhow::bail!("import is not implemented yet")
}
