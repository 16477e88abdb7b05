//! Shared support for the CLI tests: a private, real Secret Service (dbus-daemon plus
//! gnome-keyring-daemon, unlocked, in a throwaway HOME) and temporary config and data dirs.
//!
//! Each [`TestEnv`] gets its own session bus, so tests never share keyring state and never
//! touch a user's real keyring.

#![allow(dead_code)]

pub mod upstream;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestKeyring {
    bus: Child,
    keyring: Child,
    pub address: String,
    _home: tempfile::TempDir,
}

impl TestKeyring {
    pub fn start() -> TestKeyring {
        let home = tempfile::tempdir().expect("keyring home");
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon must be installed (apt: dbus-daemon); `make test` installs it");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().expect("stdout"))
            .read_line(&mut address)
            .expect("bus address");
        let address = address.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "unexpected bus address {address:?}"
        );
        let keyring = start_daemon(home.path(), &address);
        let kr = TestKeyring {
            bus,
            keyring,
            address,
            _home: home,
        };
        kr.wait_ready();
        kr
    }

    /// Kills the keyring daemon (as a crash would) and starts it again on the same keyring,
    /// unlocked, as a desktop session does.
    pub fn restart(&mut self) {
        if self.keyring.kill().is_ok() && self.keyring.wait().is_err() {
            eprintln!("test keyring daemon could not be reaped");
        }
        self.keyring = start_daemon(self._home.path(), &self.address);
        self.wait_ready();
    }

    /// Waits until the Secret Service answers on the bus.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
                .output()
                .expect("dbus-send (apt: dbus-bin)");
            if String::from_utf8_lossy(&out.stdout).contains("boolean true") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Secret Service did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_daemon(home: &Path, address: &str) -> Child {
    let mut keyring = Command::new("gnome-keyring-daemon")
        .args(["--foreground", "--unlock", "--components=secrets"])
        .arg(format!(
            "--control-directory={}",
            home.join("ctl").display()
        ))
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env("DBUS_SESSION_BUS_ADDRESS", address)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "gnome-keyring-daemon must be installed (apt: gnome-keyring); `make test` installs it",
        );
    let mut stdin = keyring.stdin.take().expect("stdin");
    stdin
        .write_all(b"throwaway-test-password")
        .expect("unlock password");
    keyring
}

impl Drop for TestKeyring {
    fn drop(&mut self) {
        for child in [&mut self.keyring, &mut self.bus] {
            if child.kill().is_ok() && child.wait().is_err() {
                eprintln!("test keyring process could not be reaped");
            }
        }
    }
}

/// A keyring plus temporary config and data dirs, and a way to run `airlock` against them.
pub struct TestEnv {
    pub keyring: TestKeyring,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            keyring: TestKeyring::start(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The default (XDG) config path; nothing sets AIRLOCK_CONFIG, so a missing file means defaults.
    pub fn config_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("xdg-config")
            .join("airlock")
            .join("config.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn write_config(&self, toml: &str) {
        let path = self.config_path();
        std::fs::create_dir_all(path.parent().expect("parent")).expect("config dir");
        std::fs::write(path, toml).expect("write config");
    }

    /// `airlock` with this env's keyring, config and data dir.
    pub fn airlock(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("airlock").expect("airlock binary");
        self.apply(c.env_clear());
        c
    }

    pub fn std_airlock(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("airlock"));
        c.env_clear();
        self.apply_std(&mut c);
        c
    }

    fn apply(&self, c: &mut assert_cmd::Command) {
        for (k, v) in self.env() {
            c.env(k, v);
        }
    }

    fn apply_std(&self, c: &mut Command) {
        c.envs(self.env());
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), self.dir.path().display().to_string()),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                self.keyring.address.clone(),
            ),
            (
                "XDG_CONFIG_HOME".into(),
                self.dir.path().join("xdg-config").display().to_string(),
            ),
            (
                "AIRLOCK_DATA_DIR".into(),
                self.data_dir().display().to_string(),
            ),
        ]
    }

    /// Stores a provider key through the CLI, as a user would.
    pub fn set_key(&self, provider: &str, key: &str) {
        self.airlock()
            .args(["keys", "set", provider])
            .write_stdin(format!("{key}\n"))
            .assert()
            .success();
    }

    /// Issues an Airlock key through the CLI and returns it.
    pub fn issue(&self, args: &[&str]) -> String {
        let out = self
            .airlock()
            .args(["keys", "issue"])
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "issue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }
}

/// A fake provider key built at run time, so no committed file holds anything key-shaped.
pub fn fake_key(prefix: &str) -> String {
    let body: String = (0..40)
        .map(|i| (b'a' + ((i * 7 + prefix.len()) % 26) as u8) as char)
        .collect();
    format!("{prefix}{body}")
}

pub fn read_to_string(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read")
}
