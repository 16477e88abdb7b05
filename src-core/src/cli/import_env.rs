//! `airlock keys import-env [FILE]`: move provider keys out of a `.env` file.
//!
//! Keys go into the keyring first and are read back; only then is one Airlock key issued for the
//! file and the file rewritten atomically (temp file in the same directory, fsync, rename), with
//! each key replaced by the Airlock key and the matching `*_BASE_URL` set. No backup is kept:
//! a backup would be a plaintext copy of the keys this command exists to remove.

use super::keys::{last4, notify_server};
use super::Ctx;
use crate::config::Config;
use crate::keys::{token, IssueRequest, Vault};
use anyhow::{bail, Context};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

/// One `NAME=value` line of a .env file.
#[derive(Debug, PartialEq, Eq)]
struct Assignment {
    export: bool,
    name: String,
    value: Zeroizing<String>,
}

fn parse_line(line: &str) -> Option<Assignment> {
    let t = line.trim_start();
    if t.starts_with('#') {
        return None;
    }
    let (export, t) = match t.strip_prefix("export ") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t),
    };
    let (name, rest) = t.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let rest = rest.trim();
    let value = if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next().unwrap_or("").to_owned()
    } else if let Some(q) = rest.strip_prefix('\'') {
        q.split('\'').next().unwrap_or("").to_owned()
    } else {
        rest.split(" #").next().unwrap_or("").trim().to_owned()
    };
    Some(Assignment {
        export,
        name: name.to_owned(),
        value: Zeroizing::new(value),
    })
}

fn render(export: bool, name: &str, value: &str) -> String {
    format!("{}{name}={value}", if export { "export " } else { "" })
}

pub fn run(ctx: &Ctx, config: &Config, file: &Path) -> anyhow::Result<()> {
    let text = Zeroizing::new(
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    // Which variable belongs to which provider.
    let mut var_to_provider: BTreeMap<&str, &str> = BTreeMap::new();
    for p in config.providers.values().filter(|p| p.needs_key()) {
        for var in &p.env_keys {
            var_to_provider.insert(var.as_str(), p.name.as_str());
        }
    }

    // 1. Find the keys to move.
    let mut found: BTreeMap<String, (Zeroizing<String>, Vec<String>)> = BTreeMap::new();
    let mut notes = Vec::new();
    for line in text.lines() {
        let Some(a) = parse_line(line) else { continue };
        let Some(provider) = var_to_provider.get(a.name.as_str()) else {
            continue;
        };
        if a.value.is_empty() || a.value.starts_with("${") || a.value.starts_with('$') {
            notes.push(format!("{}: left alone (empty or a reference)", a.name));
            continue;
        }
        if token::is_airlock_key(&a.value) {
            notes.push(format!("{}: already an Airlock key", a.name));
            continue;
        }
        match found.get_mut(*provider) {
            Some((existing, vars)) => {
                if existing.as_str() != a.value.as_str() {
                    bail!(
                        "{} and {} hold different keys for {provider}; keep one and run again",
                        vars.join("/"),
                        a.name
                    );
                }
                vars.push(a.name.clone());
            }
            None => {
                found.insert((*provider).to_owned(), (a.value, vec![a.name.clone()]));
            }
        }
    }
    if found.is_empty() {
        for n in &notes {
            println!("{n}");
        }
        println!("no provider keys to import in {}", file.display());
        return Ok(());
    }

    // 2. Into the keyring, read back before anything else changes.
    let vault = Vault::new(&config.keyring_service);
    for (provider, (value, _)) in &found {
        let entry = super::keys::entry_for(config, provider)?;
        vault.set(entry, value)?;
        if vault.get(entry)?.expose_secret() != value.as_str() {
            bail!(
                "the keyring did not return the {provider} key just stored; {} is unchanged",
                file.display()
            );
        }
    }
    notify_server(ctx);

    // 3. One Airlock key for this file, scoped to the imported providers.
    let mut store = ctx.key_store()?;
    let base = file_key_name(file);
    let mut name = base.clone();
    let mut n = 2;
    while store.get(&name)?.is_some() {
        name = format!("{base}-{n}");
        n += 1;
    }
    let (_, alk) = store.issue(&IssueRequest {
        name: name.clone(),
        providers: found.keys().cloned().collect(),
        ..Default::default()
    })?;

    // 4. Rewrite the file.
    let mut base_urls: BTreeMap<&str, String> = BTreeMap::new();
    for provider in found.keys() {
        if let Some(p) = config.provider(provider) {
            base_urls.insert(p.env_base_url.as_str(), config.sdk_base_url(p));
        }
    }
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 256));
    let mut changes = Vec::new();
    let mut base_url_done: BTreeMap<&str, bool> = base_urls.keys().map(|k| (*k, false)).collect();
    for line in text.lines() {
        let parsed = parse_line(line);
        match parsed {
            Some(a) if found.values().any(|(_, vars)| vars.contains(&a.name)) => {
                let provider = var_to_provider.get(a.name.as_str()).copied().unwrap_or("?");
                out.push_str(&render(a.export, &a.name, alk.expose_secret()));
                out.push('\n');
                changes.push(format!(
                    "{}: {provider} key ({}) moved to the OS keyring; now Airlock key {name:?}",
                    a.name,
                    last4(&a.value)
                ));
                let p = config.provider(provider);
                if let Some(p) = p {
                    let var = p.env_base_url.as_str();
                    if base_url_done.get(var) == Some(&false)
                        && !text
                            .lines()
                            .any(|l| parse_line(l).is_some_and(|b| b.name == var))
                    {
                        let url = &base_urls[var];
                        out.push_str(&render(a.export, var, url));
                        out.push('\n');
                        changes.push(format!("{var}: added, {url}"));
                        base_url_done.insert(var, true);
                    }
                }
            }
            Some(a) if base_urls.contains_key(a.name.as_str()) => {
                let url = &base_urls[a.name.as_str()];
                out.push_str(&render(a.export, &a.name, url));
                out.push('\n');
                if a.value.as_str() != url {
                    // The old value is not printed: a gateway URL can carry credentials.
                    changes.push(format!(
                        "{}: set to {url} (replaced the previous value)",
                        a.name
                    ));
                }
                base_url_done.insert(
                    base_urls
                        .get_key_value(a.name.as_str())
                        .map(|(k, _)| *k)
                        .unwrap_or(""),
                    true,
                );
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !text.ends_with('\n') && out.ends_with('\n') && !text.is_empty() {
        // Keep the file's own final-newline convention.
        out.pop();
    }
    write_atomically(file, out.as_bytes())?;
    for n in notes.iter().chain(changes.iter()) {
        println!("{n}");
    }
    println!(
        "rewrote {}; no copy of the old keys was kept",
        file.display()
    );
    Ok(())
}

fn file_key_name(file: &Path) -> String {
    let dir = std::fs::canonicalize(file)
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "project".into());
    let clean: String = dir
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("env-{clean}")
}

fn write_atomically(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        std::fs::set_permissions(tmp.path(), meta.permissions())
            .with_context(|| format!("cannot copy the permissions of {}", file.display()))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dotenv_lines() {
        let a = parse_line("export OPENAI_API_KEY=\"abc def\" # note").expect("line");
        assert!(a.export);
        assert_eq!(a.value.as_str(), "abc def");
        assert_eq!(
            parse_line("X='q'").map(|a| a.value.to_string()),
            Some("q".into())
        );
        assert_eq!(
            parse_line("X=plain # c").map(|a| a.value.to_string()),
            Some("plain".into())
        );
        assert!(parse_line("# X=1").is_none());
        assert!(parse_line("not an assignment").is_none());
    }
}
