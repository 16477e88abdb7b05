//! `airlock config init|check`

use super::Ctx;
use anyhow::{bail, Context};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Write a commented default config (to --config, $AIRLOCK_CONFIG, or the XDG config dir).
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the config and print where each provider is served.
    Check,
    /// Print the path of the config file in use.
    Path,
}

/// The default config, every setting shown and commented out.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

pub fn run(ctx: &Ctx, cmd: ConfigCommand) -> anyhow::Result<()> {
    let (path, _) = ctx.config_path();
    match cmd {
        ConfigCommand::Init { force } => {
            let path = path.context("no config directory: set HOME or pass --config")?;
            if path.exists() && !force {
                bail!("{} exists; pass --force to overwrite it", path.display());
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&path, DEFAULT_CONFIG)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(())
        }
        ConfigCommand::Check => {
            let config = ctx.load_config()?;
            match &config.source {
                Some(p) => println!("{} is valid", p.display()),
                None => println!("no config file; using defaults"),
            }
            println!("listen: {}", config.listen);
            for p in config.providers.values() {
                println!(
                    "  {:<12} {} -> {}",
                    p.name,
                    config.sdk_base_url(p),
                    p.upstream
                );
            }
            Ok(())
        }
        ConfigCommand::Path => {
            match path {
                Some(p) => println!("{}", p.display()),
                None => bail!("no config directory: set HOME or pass --config"),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_config_parses_to_the_defaults() {
        let c = Config::from_toml(DEFAULT_CONFIG, None).expect("default config must parse");
        let d = Config::from_toml("", None).expect("empty");
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.max_body, d.max_body);
        assert_eq!(c.timeouts, d.timeouts);
        assert_eq!(
            c.providers.keys().collect::<Vec<_>>(),
            d.providers.keys().collect::<Vec<_>>()
        );
    }
}
