//! `airlock prices update|reset|show`: the price table behind every cost figure.

use super::Ctx;
use crate::meter::{validate_prices, validate_update, PriceTable};
use crate::proxy::state::{load_prices, PRICES_FILE};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum PricesCommand {
    /// Load a newer LiteLLM `model_prices_and_context_window.json`. It is checked before it
    /// replaces the table in use: every price present must be a number >= 0, no more than half
    /// of its chat models may cost $0, it must price at least 50 models and keep at least 80%
    /// of the current table's count.
    Update {
        file: PathBuf,
        /// Skip the size checks (at least 50 models, at least 80% of the current count), e.g.
        /// to replace a table loaded by mistake; the prices are still checked.
        #[arg(long)]
        force: bool,
    },
    /// Go back to the price table built into Airlock (drops the table `update` loaded).
    Reset,
    /// Show the price Airlock uses for a model (per million tokens).
    Show {
        model: String,
        /// The provider the model is called through (e.g. groq, openrouter).
        #[arg(long)]
        provider: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: PricesCommand) -> anyhow::Result<()> {
    let config = ctx.load_config()?;
    let data_dir = ctx.data_dir()?;
    match cmd {
        PricesCommand::Update { file, force } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let new = PriceTable::from_litellm_json(&text)
                .with_context(|| format!("{} is not a usable price table", file.display()))?;
            // Forced, the table in use does not matter: it may be the broken one being replaced.
            let current = match load_prices(&data_dir, &config) {
                Ok(t) => Some(t),
                Err(_) if force => None,
                Err(e) => return Err(e.into()),
            };
            let checked = match &current {
                Some(current) if !force => validate_update(current, &new),
                _ => validate_prices(&new),
            };
            checked.with_context(|| {
                if force {
                    format!("refusing {}", file.display())
                } else {
                    format!(
                        "refusing {} (if it is right, `airlock prices update --force` skips the size checks; `airlock prices reset` goes back to the bundled table)",
                        file.display()
                    )
                }
            })?;
            std::fs::create_dir_all(&data_dir)?;
            let dest = data_dir.join(PRICES_FILE);
            let mut tmp = tempfile::NamedTempFile::new_in(&data_dir)?;
            std::io::Write::write_all(&mut tmp, text.as_bytes())?;
            tmp.as_file().sync_all()?;
            tmp.persist(&dest)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            println!(
                "price table updated: {} models (was {}); a running server picks it up on its next config reload or restart",
                new.len(),
                was(current.as_ref())
            );
            Ok(())
        }
        PricesCommand::Reset => {
            // Reset must work on a table that no longer loads, too.
            let current = load_prices(&data_dir, &config).ok();
            let path = data_dir.join(PRICES_FILE);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!(
                        "already using the bundled price table ({} models)",
                        PriceTable::bundled().len()
                    );
                    return Ok(());
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
            }
            println!(
                "price table reset to the bundled one: {} models (was {}); a running server picks it up on its next config reload or restart",
                PriceTable::bundled().len(),
                was(current.as_ref())
            );
            Ok(())
        }
        PricesCommand::Show { model, provider } => {
            let table = load_prices(&data_dir, &config)?;
            match table.lookup(provider.as_deref(), &model) {
                None => {
                    println!("{model}: unknown price (requests are recorded with cost \"unknown\", never $0)");
                    Ok(())
                }
                Some(p) => {
                    // Pico-dollars per token are micro-dollars per million tokens.
                    let per_m =
                        |pico: u64| crate::limits::fmt_usd(i64::try_from(pico).unwrap_or(i64::MAX));
                    println!("{model} (per million tokens)");
                    println!("  input         {}", per_m(p.input_pico_per_token));
                    println!("  output        {}", per_m(p.output_pico_per_token));
                    if let Some(c) = p.cache_read_pico_per_token {
                        println!("  cached input  {}", per_m(c));
                    }
                    if let Some(c) = p.cache_write_pico_per_token {
                        println!("  cache write   {}", per_m(c));
                    }
                    Ok(())
                }
            }
        }
    }
}

/// The model count of the table being replaced, for the confirmation line.
fn was(table: Option<&PriceTable>) -> String {
    table.map_or_else(|| "unreadable".to_owned(), |t| t.len().to_string())
}
