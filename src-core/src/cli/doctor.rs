//! `airlock doctor`: checks what Airlock needs and says how to fix each problem.

use super::Ctx;
use crate::keys::{Vault, VaultError};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&self, what: &str) {
        println!("ok    {what}");
    }
    fn warn(&self, what: &str, fix: &str) {
        println!("warn  {what}\n      fix: {fix}");
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.failures += 1;
        println!("FAIL  {what}\n      fix: {fix}");
    }
}

pub fn run(ctx: &Ctx) -> ExitCode {
    let mut r = Report { failures: 0 };

    // 1. Config.
    let (path, _) = ctx.config_path();
    let config = match ctx.load_config() {
        Ok(c) => {
            match &c.source {
                Some(p) => r.ok(&format!("config {} is valid", p.display())),
                None => r.ok(&format!(
                    "no config file ({}); using defaults",
                    path.map(|p| p.display().to_string()).unwrap_or_default()
                )),
            }
            Some(c)
        }
        Err(e) => {
            r.fail(
                &format!("config: {e:#}"),
                "edit the file at the line named above, or run `airlock config init --force`",
            );
            None
        }
    };

    // 2. Data dir and database.
    match ctx.key_store() {
        Ok(store) => {
            let live = store.list(false).map(|k| k.len()).unwrap_or(0);
            r.ok(&format!("database opens ({live} issued key(s))"));
            if live == 0 {
                r.warn(
                    "no Airlock keys issued yet",
                    "`airlock keys issue my-app` or run your command under `airlock exec -- …`",
                );
            }
        }
        Err(e) => r.fail(
            &format!("database: {e:#}"),
            "check that the data dir is writable, or set AIRLOCK_DATA_DIR",
        ),
    }

    let Some(config) = config else {
        return finish(r);
    };

    // 3. Keyring reachable and unlocked, and keys present.
    let vault = Vault::new(&config.keyring_service);
    match vault.probe() {
        Ok(()) => {
            r.ok(&format!(
                "OS keyring reachable and unlocked (service {:?})",
                config.keyring_service
            ));
            let mut set = Vec::new();
            let mut missing = Vec::new();
            for p in config.providers.values().filter(|p| p.needs_key()) {
                match vault.get(&p.key_entry) {
                    Ok(_) => set.push(p.name.clone()),
                    Err(VaultError::NotSet { .. }) => missing.push(p.name.clone()),
                    Err(e) => r.fail(&format!("{}: {e}", p.name), "see the message above"),
                }
            }
            if set.is_empty() {
                r.fail(
                    "no provider key is stored",
                    "`airlock keys set openai` (or anthropic, gemini, …), or `airlock keys import-env .env`",
                );
            } else {
                r.ok(&format!("provider keys set: {}", set.join(", ")));
                if !missing.is_empty() {
                    println!(
                        "      (no key for: {}; set them only if you use them)",
                        missing.join(", ")
                    );
                }
            }
        }
        // Every keyring call gives up after KEYRING_TIMEOUT, so a stopped daemon is reported
        // here instead of hanging the check.
        Err(VaultError::Timeout { secs }) => r.fail(
            &format!("OS keyring: the Secret Service did not answer within {secs} s"),
            "its daemon is stopped or hung: check it (`ps -o stat,pid,args -C gnome-keyring-daemon`; \
             state T means stopped), then resume or restart it (or log out and in again)",
        ),
        Err(e) => r.fail(
            &format!("OS keyring: {e}"),
            "unlock or start your keyring, then run `airlock doctor` again",
        ),
    }

    // 4. Port.
    match TcpListener::bind(config.listen) {
        Ok(_) => r.ok(&format!("{} is free for `airlock serve`", config.listen)),
        Err(_) if airlock_answers(config.listen) => r.ok(&format!("airlock is already serving on {}", config.listen)),
        Err(e) => r.fail(
            &format!("cannot listen on {}: {e}", config.listen),
            "stop whatever holds the port (`ss -ltnp`), or set `listen` in the config / `airlock serve --listen`",
        ),
    }
    finish(r)
}

fn finish(r: Report) -> ExitCode {
    if r.failures == 0 {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("{} problem(s) found", r.failures);
        ExitCode::FAILURE
    }
}

/// Whether the thing on `addr` is an Airlock (its health endpoint answers).
fn airlock_answers(addr: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    let req = format!(
        "GET /_airlock/health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    // A close without a full read still leaves what arrived in `buf`.
    if s.read_to_string(&mut buf).is_err() && buf.is_empty() {
        return false;
    }
    buf.starts_with("HTTP/1.1 200") && buf.contains("\"status\":\"ok\"")
}
