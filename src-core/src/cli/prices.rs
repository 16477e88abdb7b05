//! `airlock prices update|show`: the price table behind every cost figure.

use super::Ctx;
use crate::meter::{validate_update, PriceTable};
use crate::proxy::state::{load_prices, PRICES_FILE};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum PricesCommand {
    /// Load a newer LiteLLM `model_prices_and_context_window.json`. It is checked before it
    /// replaces the table in use: every price present must be a number >= 0, no more than half
    /// of its chat models may cost $0, it must price at least 50 models and keep at least 80%
    /// of the current table's count.
    Update { file: PathBuf },
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
        PricesCommand::Update { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let new = PriceTable::from_litellm_json(&text)
                .with_context(|| format!("{} is not a usable price table", file.display()))?;
            let current = load_prices(&data_dir, &config)?;
            validate_update(&current, &new)
                .with_context(|| format!("refusing {}", file.display()))?;
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
                current.len()
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
