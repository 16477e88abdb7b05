//! Hot reload: watch the config file and hand each new version (or its error) to a callback.
//!
//! The parent directory is watched, not the file, because editors save by writing a new file
//! and renaming it over the old one, which would end a watch on the file itself.

use super::{Config, ConfigError};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_change` with the freshly loaded config after each change to `path` settles.
pub fn watch(
    path: &Path,
    on_change: impl Fn(Result<Config, ConfigError>) + Send + 'static,
) -> Result<ConfigWatch, notify::Error> {
    let file: PathBuf = path.to_owned();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = path.file_name().map(|n| n.to_owned());
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                // A send fails only when the loop below ended, i.e. the watch is being dropped.
                if tx.send(()).is_err() {
                    tracing::debug!("config watch loop has stopped");
                }
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("airlock-config-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Debounce: one save is often several events (truncate, write, rename).
                while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
                on_change(Config::load(Some(&file), true));
            }
        })
        .map_err(|e| notify::Error::generic(&format!("cannot start config watch thread: {e}")))?;
    Ok(ConfigWatch { _watcher: watcher })
}
