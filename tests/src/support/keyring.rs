//! A Secret Service of one test's own: a private D-Bus session bus and a `gnome-keyring-daemon`
//! on it, unlocked, with a throwaway HOME. A test can stop and resume this daemon (SIGSTOP,
//! SIGCONT) without touching the keyring the other tests share (`scripts/with-keyring.sh`).
//! Point `airlock` at it with [`AirlockSetup::env`](super::AirlockSetup::env).

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon may take to answer its first call.
const START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct PrivateKeyring {
    dir: tempfile::TempDir,
    bus: Child,
    daemon: Child,
    /// `DBUS_SESSION_BUS_ADDRESS` of the private bus.
    pub address: String,
}

impl PrivateKeyring {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("airlock-keyring-")
            .tempdir()?;
        // The project's bus config: nothing is activated on demand, so no second (locked)
        // daemon can take the name while ours is stopped.
        let conf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("scripts/session-bus.conf");
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dbus-daemon (apt: dbus-daemon)")?;
        let mut address = String::new();
        let read = match bus.stdout.take() {
            Some(out) => BufReader::new(out).read_line(&mut address),
            None => Ok(0),
        };
        let address = address.trim().to_owned();
        if read.is_err() || address.is_empty() {
            stop_child(&mut bus);
            bail!("dbus-daemon printed no address");
        }
        let home = dir.path().join("home");
        let runtime = dir.path().join("run");
        for d in [&home, &runtime] {
            std::fs::create_dir_all(d)?;
        }
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        // Its own XDG_RUNTIME_DIR too: there gnome-keyring-daemon looks for a running daemon
        // to hand over to, and it must never find the shared one.
        let daemon = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let mut daemon = match daemon {
            Ok(d) => d,
            Err(e) => {
                stop_child(&mut bus);
                return Err(e).context("starting gnome-keyring-daemon (apt: gnome-keyring)");
            }
        };
        if let Some(mut stdin) = daemon.stdin.take() {
            // The password of the throwaway `login` collection; closing stdin ends it.
            stdin.write_all(b"throwaway")?;
        }
        let keyring = Self {
            dir,
            bus,
            daemon,
            address,
        };
        keyring.wait_until_answering()?;
        Ok(keyring)
    }

    /// Environment for processes that should use this keyring.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("DBUS_SESSION_BUS_ADDRESS".to_owned(), self.address.clone())]
    }

    /// The pid of this test's own keyring daemon.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.id()
    }

    /// `kill -STOP`: the daemon stops answering, as a hung one does.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// `kill -CONT`: the daemon answers again, the calls queued meanwhile first.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        super::airlock::signal(self.daemon_pid(), name)
    }

    /// Store and read back a probe secret, as `scripts/with-keyring.sh` does.
    fn wait_until_answering(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let stored = self
                .secret_tool(&["store", "--label=airlock probe", "airlock-probe", "1"])
                .and_then(|mut c| {
                    if let Some(mut stdin) = c.stdin.take() {
                        stdin.write_all(b"probe")?;
                    }
                    c.wait()
                })
                .is_ok_and(|s| s.success());
            let read = stored
                && self
                    .secret_tool(&["lookup", "airlock-probe", "1"])
                    .and_then(|c| c.wait_with_output())
                    .is_ok_and(|o| o.stdout == b"probe");
            if read {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                bail!("the private keyring did not answer within {START_TIMEOUT:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn secret_tool(&self, args: &[&str]) -> std::io::Result<Child> {
        Command::new("secret-tool")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; resuming first only makes sure that a kill that
        // fails leaves nothing stopped.
        if let Err(e) = self.resume() {
            eprintln!("resuming the private keyring daemon: {e}");
        }
        stop_child(&mut self.daemon);
        stop_child(&mut self.bus);
    }
}

fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        if let Err(e) = child.kill() {
            eprintln!("killing {}: {e}", child.id());
        }
    }
    if let Err(e) = child.wait() {
        eprintln!("reaping {}: {e}", child.id());
    }
}
