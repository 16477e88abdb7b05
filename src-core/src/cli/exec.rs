//! `airlock exec` and `airlock env`: SDK settings for a process, with an Airlock key.
//!
//! `exec` issues a short-lived child key for one command and revokes it when the command exits,
//! as `aws-vault exec` does for cloud credentials. `env` prints exports with a key that lasts
//! until revoked.

use super::Ctx;
use crate::config::Config;
use crate::keys::{IssueRequest, KeyStore};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use std::process::ExitCode;
use std::time::Duration;

/// Safety net: if `airlock exec` itself is killed, its key still dies.
const EXEC_KEY_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Use the scope of issued key NAME, and attribute the command's use to it.
    #[arg(long = "as", value_name = "NAME")]
    pub as_key: Option<String>,
    /// Stop the command's key once it has spent this much, e.g. 2usd.
    #[arg(long, value_name = "USD")]
    pub budget: Option<String>,
    /// Requests per minute for the command's key (at least 1; leave it out for no limit).
    #[arg(long, value_parser = super::keys::parse_rpm)]
    pub rpm: Option<u32>,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Use the scope of issued key NAME, and attribute use to it.
    #[arg(long = "as", value_name = "NAME")]
    pub as_key: Option<String>,
}

/// A project's `airlock.toml`, found from the current directory upwards. Its `[policy]` can only
/// tighten the configured policy; it travels with the key issued for this project.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    #[serde(default)]
    policy: crate::protect::policy::LayerFile,
}

pub(super) fn project_policy() -> anyhow::Result<Option<String>> {
    let Ok(mut dir) = std::env::current_dir() else {
        return Ok(None);
    };
    loop {
        let candidate = dir.join("airlock.toml");
        if candidate.is_file() {
            let text = std::fs::read_to_string(&candidate)
                .with_context(|| format!("cannot read {}", candidate.display()))?;
            let file: ProjectFile = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("invalid {}: {}", candidate.display(), e.message()))?;
            eprintln!(
                "airlock: applying the project policy in {}",
                candidate.display()
            );
            return Ok(Some(serde_json::to_string(&file.policy)?));
        }
        if !dir.pop() {
            return Ok(None);
        }
    }
}

/// The variables that point SDKs at Airlock, for the providers `key` may use.
fn sdk_env(
    config: &Config,
    store: &KeyStore,
    parent: Option<&str>,
    key: &SecretString,
) -> anyhow::Result<Vec<(String, String)>> {
    let allowed = match parent {
        Some(p) => store.scope_of(p)?.0,
        None => Vec::new(),
    };
    let mut vars = vec![("AIRLOCK_URL".to_owned(), config.base_url())];
    for p in config.providers.values() {
        if !allowed.is_empty() && !allowed.contains(&p.name) {
            continue;
        }
        vars.push((p.env_base_url.clone(), config.sdk_base_url(p)));
        if p.name == "gemini" {
            // The google-genai SDKs read either name.
            vars.push(("GEMINI_BASE_URL".into(), config.sdk_base_url(p)));
        }
        let key_vars: Vec<String> = if p.env_keys.is_empty() {
            vec![format!(
                "{}_API_KEY",
                p.name.to_ascii_uppercase().replace('-', "_")
            )]
        } else {
            p.env_keys.clone()
        };
        for var in key_vars {
            vars.push((var, key.expose_secret().to_owned()));
        }
    }
    Ok(vars)
}

pub fn run_exec(ctx: &Ctx, args: ExecArgs) -> ExitCode {
    match exec(ctx, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: error: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn exec(ctx: &Ctx, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let config = ctx.load_config()?;
    let budget_micros = args
        .budget
        .as_deref()
        .map(crate::limits::parse_budget)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut store = ctx.key_store()?;
    let name = format!("exec-{}-{:04x}", std::process::id(), rand::random::<u16>());
    let (_, key) = store.issue(&IssueRequest {
        name: name.clone(),
        parent: args.as_key.clone(),
        expires_in: Some(EXEC_KEY_LIFETIME),
        ephemeral: true,
        budget_micros,
        rpm: args.rpm,
        policy: project_policy()?,
        ..Default::default()
    })?;
    let vars = sdk_env(&config, &store, args.as_key.as_deref(), &key)?;
    drop(key);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(async {
        let mut cmd = tokio::process::Command::new(&args.command[0]);
        cmd.args(&args.command[1..])
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {:?}", args.command[0]))?;
        wait_forwarding_signals(&mut child).await
    });
    // Revoke whatever happened to the child, and have a running server drop the key before
    // `exec` returns (anything the child left running could still hold it).
    match store.revoke(&name) {
        Ok(_) => {
            super::live::apply_now(&config);
        }
        Err(e) => eprintln!("airlock: warning: could not revoke the command's key {name}: {e}; run `airlock keys revoke {name}`"),
    }
    let status = outcome?;
    Ok(exit_code(status))
}

#[cfg(unix)]
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
) -> anyhow::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{signal, SignalKind};
    // Ctrl-C reaches the child through the terminal's process group; Airlock only has to outlive
    // it to revoke the key. SIGTERM sent to Airlock alone ends the child too.
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = int.recv() => {}
            _ = term.recv() => {
                if let Err(e) = child.start_kill() {
                    tracing::warn!("cannot stop the child: {e}");
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
) -> anyhow::Result<std::process::ExitStatus> {
    Ok(child.wait().await?)
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return ExitCode::from((128 + sig).clamp(0, 255) as u8);
        }
    }
    ExitCode::FAILURE
}

pub fn run_env(ctx: &Ctx, args: EnvArgs) -> anyhow::Result<()> {
    let config = ctx.load_config()?;
    let mut store = ctx.key_store()?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "")
        .trim_end_matches('Z')
        .replace('T', "-");
    let name = format!("env-{stamp}-{:04x}", rand::random::<u16>());
    let (_, key) = store.issue(&IssueRequest {
        name: name.clone(),
        parent: args.as_key.clone(),
        policy: project_policy()?,
        ..Default::default()
    })?;
    for (k, v) in sdk_env(&config, &store, args.as_key.as_deref(), &key)? {
        println!("export {k}='{}'", v.replace('\'', "'\\''"));
    }
    eprintln!("# Airlock key {name:?} issued; revoke it with: airlock keys revoke {name}");
    Ok(())
}
