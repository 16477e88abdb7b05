//! Run the real `airlock` binary as a user would: a temporary config file and data dir, a
//! keyring service name unique to the test, provider keys set through `airlock keys set`, local
//! keys issued through `airlock keys issue`, and `airlock serve` on an ephemeral port.

use super::keys;
use crate::mock::MockServer;
use anyhow::{anyhow, bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long `airlock serve` may take to print its first line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test: `$AIRLOCK_BIN`, else `$CARGO_TARGET_DIR/debug/airlock`, else
/// `<workspace>/target/debug/airlock`.
pub fn airlock_bin() -> PathBuf {
    target_binary("AIRLOCK_BIN", "airlock")
}

/// The `mock-upstream` binary, found the same way (`$MOCK_UPSTREAM_BIN` overrides).
pub fn mock_upstream_bin() -> PathBuf {
    target_binary("MOCK_UPSTREAM_BIN", "mock-upstream")
}

fn target_binary(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        });
    target.join("debug").join(name)
}

/// One `[providers.NAME]` table.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub upstream: String,
    /// `kind = "openai-compatible"` and friends; None for the built-in providers.
    pub kind: Option<String>,
    /// `auth = "bearer" | "x-api-key" | "x-goog-api-key" | "query" | "none"`.
    pub auth: Option<String>,
}

/// The test config, written as TOML. Fields hold TOML-ready values (durations like `"2s"`).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub max_body: String,
    pub connect: String,
    pub first_byte: String,
    pub idle: String,
    pub request_body: String,
    pub shutdown_grace: String,
    pub allowed_origins: Vec<String>,
    pub client_provider_keys: String,
    pub providers: Vec<ProviderConfig>,
    /// Raw TOML appended at the end, for tests of settings this struct does not model.
    pub extra: String,
}

impl Config {
    /// All three built-in providers and an OpenAI-compatible `mycompat` pointed at `upstream`.
    pub fn new(upstream: &str) -> Self {
        let p = |name: &str, kind: Option<&str>, auth: Option<&str>| ProviderConfig {
            name: name.to_owned(),
            upstream: upstream.to_owned(),
            kind: kind.map(str::to_owned),
            auth: auth.map(str::to_owned),
        };
        Self {
            listen: "127.0.0.1:0".to_owned(),
            max_body: "1MiB".to_owned(),
            connect: "2s".to_owned(),
            first_byte: "2s".to_owned(),
            idle: "2s".to_owned(),
            request_body: "10s".to_owned(),
            shutdown_grace: "5s".to_owned(),
            allowed_origins: vec!["http://localhost:5173".to_owned()],
            client_provider_keys: "reject".to_owned(),
            providers: vec![
                p("openai", None, None),
                p("anthropic", None, None),
                p("gemini", None, None),
                p("mycompat", Some("openai-compatible"), Some("bearer")),
            ],
            extra: String::new(),
        }
    }

    pub fn provider_mut(&mut self, name: &str) -> Option<&mut ProviderConfig> {
        self.providers.iter_mut().find(|p| p.name == name)
    }

    pub fn to_toml(&self, keyring_service: &str) -> String {
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut t = String::new();
        t.push_str(&format!("listen = {}\n", q(&self.listen)));
        t.push_str(&format!("keyring_service = {}\n", q(keyring_service)));
        t.push_str(&format!("max_body = {}\n", q(&self.max_body)));
        t.push_str("\n[timeouts]\n");
        t.push_str(&format!("connect = {}\n", q(&self.connect)));
        t.push_str(&format!("first_byte = {}\n", q(&self.first_byte)));
        t.push_str(&format!("idle = {}\n", q(&self.idle)));
        t.push_str(&format!("request_body = {}\n", q(&self.request_body)));
        t.push_str(&format!("shutdown_grace = {}\n", q(&self.shutdown_grace)));
        t.push_str("\n[security]\n");
        let origins: Vec<String> = self.allowed_origins.iter().map(|o| q(o)).collect();
        t.push_str(&format!("allowed_origins = [{}]\n", origins.join(", ")));
        t.push_str(&format!(
            "client_provider_keys = {}\n",
            q(&self.client_provider_keys)
        ));
        for p in &self.providers {
            t.push_str(&format!("\n[providers.{}]\n", p.name));
            if let Some(kind) = &p.kind {
                t.push_str(&format!("kind = {}\n", q(kind)));
            }
            t.push_str(&format!("upstream = {}\n", q(&p.upstream)));
            if let Some(auth) = &p.auth {
                t.push_str(&format!("auth = {}\n", q(auth)));
            }
        }
        if !self.extra.is_empty() {
            t.push('\n');
            t.push_str(&self.extra);
            t.push('\n');
        }
        t
    }
}

/// A config and data dir on disk, before `serve`: run CLI commands against it.
pub struct AirlockSetup {
    dir: tempfile::TempDir,
    pub config: Config,
    pub keyring_service: String,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// More environment for every `airlock` command and `airlock serve` (e.g. a private
    /// keyring's bus from [`PrivateKeyring::env`](super::keyring::PrivateKeyring::env)).
    pub env: Vec<(String, String)>,
}

impl AirlockSetup {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("airlock-e2e-").tempdir()?;
        let keyring_service = format!("airlock-test-{}", keys::unique_suffix());
        let config_path = dir.path().join("airlock.toml");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let setup = Self {
            dir,
            config,
            keyring_service,
            config_path,
            data_dir,
            env: Vec::new(),
        };
        setup.write_config()?;
        Ok(setup)
    }

    /// Rewrite the config file from `self.config`.
    pub fn write_config(&self) -> anyhow::Result<()> {
        std::fs::write(
            &self.config_path,
            self.config.to_toml(&self.keyring_service),
        )?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `airlock --config FILE ARGS…` with this test's data dir, nothing else inherited that
    /// could point it elsewhere.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(airlock_bin());
        cmd.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("AIRLOCK_CONFIG", &self.config_path)
            .env("AIRLOCK_DATA_DIR", &self.data_dir)
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Run a CLI command to completion, feeding `stdin` (stdin is a pipe, not a TTY).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {} (set AIRLOCK_BIN?)", airlock_bin().display()))?;
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(input) = stdin {
                pipe.write_all(input.as_bytes())?;
            }
        }
        let out = wait_output(child, Duration::from_secs(60))
            .with_context(|| format!("airlock {}", args.join(" ")))?;
        Ok(out)
    }

    /// Like [`run`](Self::run) but fails unless the command exits 0.
    pub fn run_ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.run(args, stdin)?;
        if !out.status.success() {
            bail!(
                "`airlock {}` failed with {}:\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `airlock keys set PROVIDER` with the key on stdin.
    pub fn set_key(&self, provider: &str, key: &str) -> anyhow::Result<()> {
        self.run_ok(&["keys", "set", provider], Some(&format!("{key}\n")))?;
        Ok(())
    }

    /// `airlock keys issue NAME ARGS…`; returns the printed `alk_…` key.
    pub fn issue(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["keys", "issue", name];
        all.extend_from_slice(args);
        let out = self.run_ok(&all, None)?;
        let key = out.trim().to_owned();
        if !key.starts_with("alk_") || key.contains(char::is_whitespace) {
            bail!("`airlock keys issue` printed {out:?}, expected only an alk_ key");
        }
        Ok(key)
    }

    /// Start `airlock serve` and wait for its first stdout line.
    pub fn serve(self) -> anyhow::Result<Airlock> {
        self.serve_with_args(&[])
    }

    pub fn serve_with_args(self, extra: &[&str]) -> anyhow::Result<Airlock> {
        let mut airlock = Airlock {
            stderr_path: self.dir.path().join("serve.stderr"),
            setup: self,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout: mpsc::channel().1,
            first_line: String::new(),
            serve_args: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        airlock.spawn()?;
        Ok(airlock)
    }
}

fn wait_output(mut child: Child, timeout: Duration) -> anyhow::Result<Output> {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            s.read_to_end(&mut buf).ok();
        }
        buf
    });
    let err_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            s.read_to_end(&mut buf).ok();
        }
        buf
    });
    let status = wait_timeout(&mut child, timeout)?.ok_or_else(|| {
        if let Err(e) = child.kill() {
            eprintln!("killing a hung airlock: {e}");
        }
        anyhow!("did not finish within {timeout:?}")
    })?;
    let stdout = out_t
        .join()
        .map_err(|_| anyhow!("stdout reader panicked"))?;
    let stderr = err_t
        .join()
        .map_err(|_| anyhow!("stderr reader panicked"))?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `airlock serve`. Killed on drop; its stderr is printed if the test failed.
pub struct Airlock {
    pub setup: AirlockSetup,
    child: Option<Child>,
    pub addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
    stderr_path: PathBuf,
    /// The first stdout line, `airlock listening on http://…`.
    pub first_line: String,
    serve_args: Vec<String>,
}

impl Airlock {
    /// Start `airlock serve` (appending to its stderr file) and wait for its first stdout line.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)?;
        let mut args = vec!["serve".to_owned()];
        args.extend(self.serve_args.iter().cloned());
        let mut child = self
            .setup
            .command(&args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {} (set AIRLOCK_BIN?)", airlock_bin().display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.stdout = rx;
        let first = match self.stdout.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(_) => bail!(
                "`airlock serve` printed no first line within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                self.stderr_tail()
            ),
        };
        let addr = first
            .strip_prefix("airlock listening on http://")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                anyhow!(
                    "first stdout line of `airlock serve` is {first:?}, expected \
                     `airlock listening on http://127.0.0.1:PORT`; stderr:\n{}",
                    self.stderr_tail()
                )
            })?;
        self.addr = addr;
        self.first_line = first;
        Ok(())
    }

    /// `kill -9` the server, then start it again on the same config, data dir and keyring (on
    /// a new port).
    pub fn kill9_and_restart(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        let status = self.wait_exit(Duration::from_secs(10))?;
        if status.is_none() {
            bail!("airlock still running 10s after kill -9");
        }
        self.child = None;
        self.spawn()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stdout lines after the first that have arrived so far (without waiting).
    pub fn more_stdout(&self) -> Vec<String> {
        self.stdout.try_iter().collect()
    }

    /// Stdout lines that arrive within `wait`.
    pub fn stdout_lines_within(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        lines
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send a signal (`TERM`, `INT`) with the `kill` utility; this crate forbids `unsafe`.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        signal(self.pid().context("airlock already reaped")?, name)
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let child = self.child.as_mut().context("airlock already reaped")?;
        wait_timeout(child, timeout)
    }

    /// The last few KiB of the server's stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    pub fn run_ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        self.setup.run_ok(args, stdin)
    }
}

impl Drop for Airlock {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                if let Err(e) = child.kill() {
                    eprintln!("killing airlock {}: {e}", child.id());
                }
            }
            if let Err(e) = child.wait() {
                eprintln!("reaping airlock: {e}");
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- airlock serve stderr (tail) ----\n{}\n----",
                self.stderr_tail()
            );
        }
    }
}

/// The real provider keys a test put in the keyring.
#[derive(Debug, Clone)]
pub struct ProviderKeys {
    pub openai: String,
    pub anthropic: String,
    pub gemini: String,
    pub mycompat: String,
}

impl ProviderKeys {
    pub fn generate() -> Self {
        Self {
            openai: keys::openai(),
            anthropic: keys::anthropic(),
            gemini: keys::gemini(),
            mycompat: keys::compat(),
        }
    }

    pub fn get(&self, provider: &str) -> &str {
        match provider {
            "openai" => &self.openai,
            "anthropic" => &self.anthropic,
            "gemini" => &self.gemini,
            _ => &self.mycompat,
        }
    }
}

/// The usual fixture: a mock upstream, provider keys in a fresh keyring service, one unscoped
/// local key `alk`, and `airlock serve` running.
pub struct TestEnv {
    pub airlock: Airlock,
    pub keys: ProviderKeys,
    /// An unscoped local key (`airlock keys issue test-all`).
    pub alk: String,
    pub mock: MockServer,
}

impl TestEnv {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}, |_| Ok(()))
    }

    /// `config` edits the config before anything runs; `before_serve` may set more keys or
    /// issue more local keys.
    pub fn start_with(
        config: impl FnOnce(&mut Config),
        before_serve: impl FnOnce(&AirlockSetup) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let mock = MockServer::start()?;
        let mut cfg = Config::new(&mock.url());
        config(&mut cfg);
        let setup = AirlockSetup::new(cfg)?;
        let keys = ProviderKeys::generate();
        for p in ["openai", "anthropic", "gemini", "mycompat"] {
            if setup.config.providers.iter().any(|c| c.name == p) {
                setup.set_key(p, keys.get(p))?;
            }
        }
        let alk = setup.issue("test-all", &[])?;
        before_serve(&setup)?;
        let airlock = setup.serve()?;
        Ok(Self {
            airlock,
            keys,
            alk,
            mock,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.airlock.addr
    }
}

/// Sends signal `name` (`TERM`, `STOP` …) to `pid` with the `kill` utility; this crate forbids
/// `unsafe`.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}
