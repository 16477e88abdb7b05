//! `airlock keys …`: provider keys in the keyring, and issued Airlock keys.

use super::live::apply_now;
use super::Ctx;
use crate::config::{parse_duration, Config};
use crate::keys::store::now_ms;
use crate::keys::{IssueRequest, IssuedKey, Vault, VaultError};
use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Store a provider's real API key in the OS keyring (prompted without echo, or one line
    /// from stdin when stdin is not a terminal).
    Set { provider: String },
    /// Show each provider and whether its key is set (with at most its last 4 characters).
    List,
    /// Remove a provider's key from the keyring.
    Rm { provider: String },
    /// Move provider keys from a .env file into the keyring and put an Airlock key in their place.
    ImportEnv {
        /// The file to rewrite.
        #[arg(default_value = ".env")]
        file: PathBuf,
    },
    /// Issue a local Airlock key (printed once, alone on stdout).
    Issue {
        name: String,
        /// Providers the key may use (repeatable; default all).
        #[arg(long = "provider", value_name = "P")]
        providers: Vec<String>,
        /// Model glob the key may use, e.g. 'gpt-4o*' (repeatable; default all).
        #[arg(long = "model", value_name = "GLOB")]
        models: Vec<String>,
        /// Lifetime, e.g. 8h or 30d (default: until revoked).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// A lifetime budget for this key, e.g. 5usd.
        #[arg(long, value_name = "USD")]
        budget: Option<String>,
        /// Requests per minute for this key (at least 1; leave it out for no limit).
        #[arg(long, value_parser = parse_rpm)]
        rpm: Option<u32>,
    },
    /// Revoke an issued key (and every child key made from it).
    Revoke { name: String },
    /// Pause a key (and its children) until `airlock keys resume`.
    Pause { name: String },
    /// Resume a paused key.
    Resume { name: String },
    /// List issued keys.
    Issued {
        /// Include revoked keys and finished `airlock exec` keys.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Ctx, cmd: KeysCommand) -> anyhow::Result<()> {
    let config = ctx.load_config()?;
    match cmd {
        KeysCommand::Set { provider } => set(ctx, &config, &provider),
        KeysCommand::List => list(&config),
        KeysCommand::Rm { provider } => rm(ctx, &config, &provider),
        KeysCommand::ImportEnv { file } => super::import_env::run(ctx, &config, &file),
        KeysCommand::Issue {
            name,
            providers,
            models,
            expires,
            budget,
            rpm,
        } => {
            let budget_micros = budget
                .as_deref()
                .map(crate::limits::parse_budget)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let req = IssueRequest {
                name,
                providers,
                models,
                expires_in: expires
                    .as_deref()
                    .map(parse_duration)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                budget_micros,
                rpm,
                ..Default::default()
            };
            issue(ctx, &config, req)
        }
        KeysCommand::Pause { name } => {
            let changed = ctx.key_store()?.pause(&name, "paused by the user")?;
            let applied = apply_now(&config);
            if changed {
                println!("paused {name} ({applied})");
            } else {
                println!("{name} was already paused ({applied})");
            }
            Ok(())
        }
        KeysCommand::Resume { name } => {
            let changed = ctx.key_store()?.resume(&name)?;
            let applied = apply_now(&config);
            if changed {
                println!("resumed {name} ({applied})");
            } else {
                println!("{name} was not paused ({applied})");
            }
            Ok(())
        }
        KeysCommand::Revoke { name } => {
            let n = ctx.key_store()?.revoke(&name)?;
            let applied = apply_now(&config);
            let children = n.saturating_sub(1);
            if children > 0 {
                println!("revoked {name} and {children} child key(s) ({applied})");
            } else {
                println!("revoked {name} ({applied})");
            }
            Ok(())
        }
        KeysCommand::Issued { all, json } => issued(ctx, all, json),
    }
}

/// The provider's keyring entry, refusing names that are not configured.
pub(super) fn entry_for<'c>(config: &'c Config, provider: &str) -> anyhow::Result<&'c str> {
    match config.provider(provider) {
        Some(p) if p.needs_key() => Ok(&p.key_entry),
        Some(_) => bail!("provider {provider} needs no key"),
        None => bail!(
            "unknown provider {provider:?}; configured: {}",
            config
                .providers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn set(ctx: &Ctx, config: &Config, provider: &str) -> anyhow::Result<()> {
    let entry = entry_for(config, provider)?;
    let key = read_secret(&format!("Paste the {provider} API key (input hidden): "))?;
    if key.is_empty() {
        bail!("no key given; nothing stored");
    }
    if crate::keys::token::is_airlock_key(&key) {
        bail!("that is an Airlock key (alk_…), not a {provider} key; store the provider's own key");
    }
    if key.chars().any(char::is_whitespace) {
        bail!("the key contains whitespace; paste the key alone");
    }
    let vault = Vault::new(&config.keyring_service);
    vault.set(entry, &key)?;
    let back = vault.get(entry)?;
    if back.expose_secret() != key.as_str() {
        bail!("the keyring did not return the key just stored; check your keyring manager");
    }
    notify_server(ctx);
    println!(
        "stored the {provider} key in the OS keyring ({})",
        last4(&key)
    );
    Ok(())
}

fn rm(ctx: &Ctx, config: &Config, provider: &str) -> anyhow::Result<()> {
    let entry = entry_for(config, provider)?;
    let removed = Vault::new(&config.keyring_service).delete(entry)?;
    notify_server(ctx);
    if removed {
        println!("removed the {provider} key from the OS keyring");
    } else {
        println!("no {provider} key was set");
    }
    Ok(())
}

fn list(config: &Config) -> anyhow::Result<()> {
    let vault = Vault::new(&config.keyring_service);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<12} {:<10} KEYRING ENTRY", "PROVIDER", "KEY")?;
    for p in config.providers.values() {
        let state = if !p.needs_key() {
            "not needed".to_owned()
        } else {
            match vault.get(&p.key_entry) {
                Ok(k) => last4(k.expose_secret()),
                Err(VaultError::NotSet { .. }) => "not set".to_owned(),
                Err(e) => return Err(e.into()),
            }
        };
        writeln!(
            out,
            "{:<12} {:<10} {}/{}",
            p.name, state, config.keyring_service, p.key_entry
        )?;
    }
    Ok(())
}

/// `…abcd`: at most the last four characters, and none of a short key.
pub(super) fn last4(key: &str) -> String {
    let n = key.chars().count();
    if n < 12 {
        return "set".to_owned();
    }
    let tail: String = key.chars().skip(n - 4).collect();
    format!("…{tail}")
}

fn issue(ctx: &Ctx, config: &Config, req: IssueRequest) -> anyhow::Result<()> {
    for p in &req.providers {
        if config.provider(p).is_none() {
            bail!(
                "unknown provider {p:?}; configured: {}",
                config
                    .providers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let (issued, key) = ctx.key_store()?.issue(&req)?;
    println!("{}", key.expose_secret());
    eprintln!(
        "issued Airlock key {:?} ({}); it is shown only this once",
        issued.name,
        describe_scope(&issued)
    );
    Ok(())
}

pub(super) fn describe_scope(k: &IssuedKey) -> String {
    let providers = if k.providers.is_empty() {
        "all providers".to_owned()
    } else {
        k.providers.join(", ")
    };
    let models = if k.models.is_empty() {
        "all models".to_owned()
    } else {
        k.models.join(", ")
    };
    let expiry = match k.expires_at {
        Some(t) => format!("expires {}", crate::ledger::query::fmt_ms(t)),
        None => "no expiry".to_owned(),
    };
    format!("{providers}; {models}; {expiry}")
}

fn issued(ctx: &Ctx, all: bool, json: bool) -> anyhow::Result<()> {
    let keys = ctx.key_store()?.list(all)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&keys)?)?;
        return Ok(());
    }
    let now = now_ms();
    writeln!(
        out,
        "{:<24} {:<10} {:<8} {:<20} {:<16} {:<20} PARENT",
        "NAME", "HINT", "STATUS", "PROVIDERS", "MODELS", "EXPIRES"
    )?;
    for k in keys {
        let status = if k.revoked_at.is_some() {
            "revoked"
        } else if k.is_expired(now) {
            "expired"
        } else if k.paused_at.is_some() {
            "paused"
        } else {
            "active"
        };
        writeln!(
            out,
            "{:<24} {:<10} {:<8} {:<20} {:<16} {:<20} {}",
            k.name,
            k.hint,
            status,
            if k.providers.is_empty() {
                "*".into()
            } else {
                k.providers.join(",")
            },
            if k.models.is_empty() {
                "*".into()
            } else {
                k.models.join(",")
            },
            k.expires_at
                .map(crate::ledger::query::fmt_ms)
                .unwrap_or_else(|| "never".into()),
            k.parent.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

/// Reads a secret: hidden prompt on a terminal, one line from stdin otherwise.
fn read_secret(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let raw = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(prompt).context("cannot read the key from the terminal")?,
        )
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the key from stdin")?;
        line
    };
    Ok(Zeroizing::new(raw.trim().to_owned()))
}

/// Tells a running server that provider keys changed, so it drops its cached copies.
pub(super) fn notify_server(ctx: &Ctx) {
    match ctx.key_store() {
        Ok(store) => {
            if let Err(e) = store.bump_secrets() {
                tracing::warn!("could not notify a running server of the key change: {e}");
            }
        }
        Err(e) => tracing::warn!("could not notify a running server of the key change: {e:#}"),
    }
}

/// `--rpm`: a positive number. 0 was stored and then meant "no limit", the opposite of what
/// `--budget 0usd` means, so it is refused.
pub fn parse_rpm(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("0 requests per minute would allow nothing; use 1 or more, or leave --rpm out for no limit".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number of requests per minute")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last4_never_shows_more_than_four() {
        assert_eq!(last4("sk-abcdefghijklmnop1234"), "…1234");
        assert_eq!(last4("short"), "set");
    }
}
