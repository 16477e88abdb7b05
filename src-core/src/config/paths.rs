//! Where Airlock keeps its files: XDG config and data dirs, overridable by environment.

use std::path::PathBuf;

/// The config file to read and whether the user named it explicitly (`--config` or
/// `AIRLOCK_CONFIG`); an explicit file must exist, the default one may not.
pub fn config_file(cli: Option<PathBuf>) -> (Option<PathBuf>, bool) {
    if let Some(p) = cli {
        return (Some(p), true);
    }
    if let Some(p) = std::env::var_os("AIRLOCK_CONFIG").filter(|v| !v.is_empty()) {
        return (Some(PathBuf::from(p)), true);
    }
    (
        dirs::config_dir().map(|d| d.join("airlock").join("config.toml")),
        false,
    )
}

/// The data dir (SQLite database). `AIRLOCK_DATA_DIR` wins over the XDG data dir.
pub fn data_dir() -> Result<PathBuf, std::io::Error> {
    if let Some(p) = std::env::var_os("AIRLOCK_DATA_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::data_dir().map(|d| d.join("airlock")).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no data directory: set HOME, XDG_DATA_HOME or AIRLOCK_DATA_DIR",
        )
    })
}
