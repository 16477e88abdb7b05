use super::*;

fn usage(input: u64, cached: u64, writes: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        cache_write_tokens: writes,
        reasoning_tokens: reasoning,
        estimated: false,
    }
}

fn bundled_price(provider: &str, model: &str) -> ModelPrice {
    PriceTable::bundled()
        .lookup(Some(provider), model)
        .cloned()
        .unwrap_or_else(|| panic!("{provider}/{model} priced"))
}

#[test]
fn micro_usd_display() {
    assert_eq!(MicroUsd(0).to_string(), "$0.000000");
    assert_eq!(MicroUsd(1_234).to_string(), "$0.001234");
    assert_eq!(MicroUsd(12_345_678).to_string(), "$12.345678");
    assert_eq!(
        [MicroUsd(1), MicroUsd(2)].into_iter().sum::<MicroUsd>(),
        MicroUsd(3)
    );
}

#[test]
fn bundled_table_loads_and_every_price_is_exact() {
    let table = PriceTable::from_litellm_json(BUNDLED).expect("bundled table parses");
    assert!(table.len() >= MIN_MODELS_IN_UPDATE, "{}", table.len());
    assert_eq!(PriceTable::bundled().len(), table.len());
    assert!(table.lookup(None, "sample_spec").is_none());
    for (name, p) in &table.models {
        // The bundled prices have at most 3 decimals per million tokens, so any float
        // conversion error would show up as a non-multiple of 1000 pico-dollars.
        for v in [
            Some(p.input_pico_per_token),
            Some(p.output_pico_per_token),
            p.cache_read_pico_per_token,
            p.cache_write_pico_per_token,
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(v % 1000, 0, "{name}: {v}");
        }
        assert!(p.input_pico_per_token > 0, "{name} has an input price");
        assert!(p.provider.is_some() && p.mode.is_some(), "{name}");
    }
}

#[test]
fn bundled_covers_current_models_of_every_provider() {
    let table = PriceTable::bundled();
    let want: &[(&str, &str)] = &[
        ("openai", "gpt-5"),
        ("openai", "gpt-5-mini"),
        ("openai", "gpt-5-nano"),
        ("openai", "gpt-4.1"),
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4.1-nano"),
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("openai", "o3"),
        ("openai", "o4-mini"),
        ("openai", "o1"),
        ("openai", "text-embedding-3-small"),
        ("openai", "text-embedding-3-large"),
        ("anthropic", "claude-opus-4-5"),
        ("anthropic", "claude-opus-4-1"),
        ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-3-5-haiku"),
        ("gemini", "gemini-2.5-pro"),
        ("gemini", "gemini-2.5-flash"),
        ("gemini", "gemini-2.5-flash-lite"),
        ("gemini", "gemini-2.0-flash"),
        ("gemini", "gemini-embedding-001"),
        ("groq", "llama-3.3-70b-versatile"),
        ("groq", "openai/gpt-oss-120b"),
        ("mistral", "mistral-large-latest"),
        ("mistral", "mistral-small-latest"),
        ("deepseek", "deepseek-chat"),
        ("deepseek", "deepseek-reasoner"),
        ("xai", "grok-4"),
        ("xai", "grok-3-mini"),
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ("openrouter", "anthropic/claude-sonnet-4.5"),
        ("openrouter", "openai/gpt-4o"),
    ];
    for (provider, model) in want {
        assert!(
            table.lookup(Some(provider), model).is_some(),
            "{provider} {model}"
        );
    }
}

#[test]
fn lookup_dated_prefixed_and_unknown_names() {
    let t = PriceTable::bundled();
    let price = |p: Option<&str>, m: &str| t.lookup(p, m).map(|p| p.input_pico_per_token);
    // Dated variants: exact entry if any, else the undated name.
    assert_eq!(price(Some("openai"), "gpt-4o-2024-08-06"), Some(2_500_000));
    assert_eq!(price(Some("openai"), "gpt-4o-2099-01-01"), Some(2_500_000));
    assert_eq!(
        price(Some("openai"), "gpt-4o-2024-05-13"),
        Some(5_000_000),
        "own price"
    );
    assert_eq!(price(Some("openai"), "gpt-4-0613"), Some(30_000_000));
    assert_eq!(price(Some("openai"), "gpt-3.5-turbo-1106"), Some(500_000));
    assert_eq!(
        price(Some("anthropic"), "claude-sonnet-4-5-20250929"),
        Some(3_000_000)
    );
    assert_eq!(
        price(Some("anthropic"), "claude-haiku-4-5-20251001"),
        Some(1_000_000)
    );
    assert_eq!(
        price(Some("anthropic"), "claude-3-5-haiku-latest"),
        Some(800_000)
    );
    assert_eq!(
        price(Some("anthropic"), "claude-opus-4-5@20251101"),
        Some(5_000_000)
    );
    // Provider prefixes, Gemini `models/` paths and versions.
    assert_eq!(
        price(Some("gemini"), "models/gemini-2.5-flash"),
        Some(300_000)
    );
    assert_eq!(price(Some("gemini"), "gemini-2.0-flash-001"), Some(100_000));
    assert_eq!(price(None, "gemini/gemini-2.5-flash"), Some(300_000));
    assert_eq!(
        price(Some("gemini"), "gemini/gemini-2.5-pro"),
        Some(1_250_000)
    );
    assert_eq!(
        price(Some("groq"), "llama-3.3-70b-versatile"),
        Some(590_000)
    );
    assert_eq!(price(None, "groq/llama-3.3-70b-versatile"), Some(590_000));
    assert_eq!(
        price(Some("together"), "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        Some(880_000)
    );
    assert_eq!(
        price(Some("openrouter"), "openai/gpt-4o-mini"),
        Some(150_000)
    );
    // Through a gateway that does not list it, the model's own price is the fallback.
    assert_eq!(price(Some("openrouter"), "openai/gpt-4.1"), Some(2_000_000));
    assert_eq!(price(Some("openai"), "GPT-4o "), Some(2_500_000));
    // Unknown stays unknown.
    for m in ["my-finetune", "", "gpt-7", "models/", "claude-sonnet-9"] {
        assert_eq!(price(Some("openai"), m), None, "{m}");
    }
}

#[test]
fn cost_openai_with_cache_hits() {
    // 93 × $2.50/M + 1024 × $1.25/M + 46 × $10/M = $0.0019725 → $0.001973 (half up).
    let c = cost(
        &usage(1117, 1024, 0, 46, 0),
        &bundled_price("openai", "gpt-4o"),
    );
    assert_eq!(c, MicroUsd(1_973));
    assert_eq!(c.to_string(), "$0.001973");
}

#[test]
fn cost_anthropic_cache_reads_and_writes() {
    // 25 × $3/M + 2048 × $0.30/M + 15 × $15/M = $0.0009144 → $0.000914.
    let sonnet = bundled_price("anthropic", "claude-sonnet-4-5-20250929");
    assert_eq!(cost(&usage(2073, 2048, 0, 15, 0), &sonnet), MicroUsd(914));
    // 200 × $1/M + 800 × $1.25/M (5-minute cache write) + 100 × $5/M = $0.0017.
    let haiku = bundled_price("anthropic", "claude-haiku-4-5");
    assert_eq!(cost(&usage(1000, 0, 800, 100, 0), &haiku), MicroUsd(1_700));
}

#[test]
fn cost_gemini_thoughts_at_output_rate() {
    // 1024 × $0.30/M + 1024 × $0.03/M + 520 × $2.50/M = $0.00163792 → $0.001638.
    let flash = bundled_price("gemini", "gemini-2.5-flash");
    assert_eq!(
        cost(&usage(2048, 1024, 0, 520, 400), &flash),
        MicroUsd(1_638)
    );
}

#[test]
fn cost_rounds_half_up_once_at_the_end() {
    let emb = bundled_price("openai", "text-embedding-3-small"); // $0.02/M = 20_000 pico/token
    assert_eq!(cost(&usage(25, 0, 0, 0, 0), &emb), MicroUsd(1)); // 0.5 µ$ → 1
    assert_eq!(cost(&usage(24, 0, 0, 0, 0), &emb), MicroUsd(0)); // 0.48 µ$ → 0
                                                                 // Per-class rounding would give 0 + 0; summing first gives 0.6 → 1.
    let p = ModelPrice {
        input_pico_per_token: 300_000,
        output_pico_per_token: 300_000,
        cache_read_pico_per_token: None,
        cache_write_pico_per_token: None,
        reasoning_pico_per_token: None,
        provider: None,
        mode: None,
        max_input_tokens: None,
    };
    assert_eq!(cost(&usage(1, 0, 0, 1, 0), &p), MicroUsd(1));
    // No cache prices known: cached tokens pay the input rate, never zero.
    assert_eq!(cost(&usage(10, 10, 0, 0, 0), &p), MicroUsd(3));
}

#[test]
fn cost_reasoning_rate_and_large_numbers() {
    let p = ModelPrice {
        input_pico_per_token: 1_000_000,
        output_pico_per_token: 4_000_000,
        cache_read_pico_per_token: Some(100_000),
        cache_write_pico_per_token: None,
        reasoning_pico_per_token: Some(8_000_000),
        provider: None,
        mode: None,
        max_input_tokens: None,
    };
    // 1000 × $1/M + 300 × $4/M + 200 × $8/M = $0.0038.
    assert_eq!(cost(&usage(1000, 0, 0, 500, 200), &p), MicroUsd(3_800));
    // A billion o1-pro output tokens is $600,000 with no overflow.
    let o1_pro = bundled_price("openai", "o1-pro");
    assert_eq!(
        cost(&usage(0, 0, 0, 1_000_000_000, 0), &o1_pro),
        MicroUsd(600_000_000_000)
    );
    let huge = usage(u64::MAX, 0, 0, u64::MAX, 0);
    assert_eq!(cost(&huge, &o1_pro), MicroUsd(u64::MAX));
}

#[test]
fn litellm_format_parsing() {
    let json = r#"{
      "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
      "m-chat": {"input_cost_per_token": 3e-07, "output_cost_per_token": 1.5e-06,
                 "cache_read_input_token_cost": 7.5e-08, "litellm_provider": "x",
                 "mode": "chat", "max_input_tokens": 128000, "supports_vision": true,
                 "tool_use_system_prompt_tokens": 159, "search_context_cost_per_query": {"low": 0.03}},
      "m-embed": {"input_cost_per_token": 2e-08, "mode": "embedding"},
      "m-image": {"input_cost_per_image": 0.04, "mode": "image_generation"},
      "m-null": {"input_cost_per_token": null, "output_cost_per_token": null},
      "m-neg": {"input_cost_per_token": -1e-06},
      "m-str": {"input_cost_per_token": "0.000001"},
      "m-reason": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                   "output_cost_per_reasoning_token": 3.5e-06}
    }"#;
    let t = PriceTable::from_litellm_json(json).expect("parses");
    assert_eq!(t.len(), 3);
    let chat = t.lookup(None, "m-chat").expect("m-chat");
    assert_eq!(
        (
            chat.input_pico_per_token,
            chat.output_pico_per_token,
            chat.cache_read_pico_per_token
        ),
        (300_000, 1_500_000, Some(75_000))
    );
    assert_eq!(chat.provider.as_deref(), Some("x"));
    assert_eq!(chat.max_input_tokens, Some(128_000));
    assert_eq!(
        t.lookup(None, "m-embed").map(|p| p.output_pico_per_token),
        Some(0)
    );
    assert_eq!(
        t.lookup(None, "m-reason")
            .and_then(|p| p.reasoning_pico_per_token),
        Some(3_500_000)
    );
    for m in ["m-image", "m-null", "m-neg", "m-str", "sample_spec"] {
        assert!(t.lookup(None, m).is_none(), "{m}");
    }
    assert!(matches!(
        PriceTable::from_litellm_json("[]"),
        Err(PriceError::NotAnObject)
    ));
    assert!(matches!(
        PriceTable::from_litellm_json("{"),
        Err(PriceError::Json(_))
    ));
}

#[test]
fn overrides_win_including_for_dated_variants() {
    let mut t = PriceTable::bundled();
    let overrides: BTreeMap<String, PriceOverride> = toml::from_str(
        r#"
        [gpt-4o]
        input_per_mtok = 1.0
        output_per_mtok = 2.0
        cached_input_per_mtok = 0.5

        [my-finetune]
        input_per_mtok = 0.000001
        output_per_mtok = 12.345678
        "#,
    )
    .expect("toml");
    t.set_overrides(&overrides).expect("valid");
    let p = t
        .lookup(Some("openai"), "gpt-4o-2024-08-06")
        .expect("priced");
    assert_eq!(
        (
            p.input_pico_per_token,
            p.output_pico_per_token,
            p.cache_read_pico_per_token
        ),
        (1_000_000, 2_000_000, Some(500_000))
    );
    let ft = t.lookup(Some("openai"), "my-finetune").expect("priced");
    assert_eq!(
        (ft.input_pico_per_token, ft.output_pico_per_token),
        (1, 12_345_678)
    );
    assert_eq!(
        t.len(),
        PriceTable::bundled().len(),
        "overrides are not table models"
    );

    let bad: BTreeMap<String, PriceOverride> =
        toml::from_str("[m]\ninput_per_mtok = -1.0\noutput_per_mtok = 1.0\n").expect("toml");
    assert!(matches!(
        t.set_overrides(&bad),
        Err(PriceError::InvalidOverride { .. })
    ));
    let typo = toml::from_str::<BTreeMap<String, PriceOverride>>(
        "[m]\ninput_per_mtok = 1.0\noutput_per_mtok = 1.0\ncached_per_mtok = 1.0\n",
    );
    assert!(typo.is_err(), "unknown fields are rejected");
}

fn table_of(n: usize) -> PriceTable {
    let entries: Vec<String> = (0..n)
        .map(|i| format!(r#""m{i}": {{"input_cost_per_token": 1e-06}}"#))
        .collect();
    PriceTable::from_litellm_json(&format!("{{{}}}", entries.join(","))).expect("parses")
}

#[test]
fn update_validation() {
    let bundled = PriceTable::bundled();
    assert!(validate_update(&bundled, &bundled).is_ok());
    assert!(matches!(
        validate_update(&bundled, &table_of(MIN_MODELS_IN_UPDATE - 1)),
        Err(PriceError::TooFewModels { found: 49, min: 50 })
    ));
    assert!(validate_update(&table_of(10), &table_of(MIN_MODELS_IN_UPDATE)).is_ok());
    let current = table_of(1000);
    assert!(validate_update(&current, &table_of(800)).is_ok());
    let err = validate_update(&current, &table_of(799)).expect_err("shrank");
    assert!(matches!(
        err,
        PriceError::ShrankTooMuch {
            old: 1000,
            new: 799,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "price table would shrink from 1000 to 799 models (below 80%)"
    );
}

/// The bundled table with `edit` applied to every model entry.
fn bundled_edited(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> PriceTable {
    let mut root: Value = serde_json::from_str(BUNDLED).expect("bundled json");
    for (name, entry) in root.as_object_mut().expect("object") {
        if name != "sample_spec" {
            edit(entry.as_object_mut().expect("entry"));
        }
    }
    PriceTable::from_litellm_json(&root.to_string()).expect("parses")
}

#[test]
fn the_bundled_table_passes_its_own_checks() {
    let bundled = PriceTable::bundled();
    assert!(bundled.invalid_models().is_empty());
    validate_prices(&bundled).expect("bundled prices are valid");
}

/// Regression: string prices were read as $0 (and a table of them accepted by `prices update`),
/// so every cost ignored input.
#[test]
fn a_price_that_is_not_a_number_makes_the_model_unknown_and_the_table_refused() {
    let t = bundled_edited(|e| {
        if let Some(v) = e.get("input_cost_per_token").and_then(Value::as_f64) {
            e.insert("input_cost_per_token".into(), Value::from(v.to_string()));
        }
    });
    assert!(
        t.lookup(Some("openai"), "gpt-4o").is_none(),
        "unknown, never $0 input"
    );
    assert!(t.invalid_models().iter().any(|m| m == "gpt-4o"));
    let err = validate_update(&PriceTable::bundled(), &t).expect_err("refused");
    assert!(matches!(err, PriceError::InvalidPrices { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("not a number >= 0"), "{msg}");
    assert!(
        msg.contains(" more)"),
        "names a few, counts the rest: {msg}"
    );

    let negative = bundled_edited(|e| {
        if e.contains_key("output_cost_per_token") {
            e.insert("output_cost_per_token".into(), Value::from(-1e-6));
        }
    });
    assert!(matches!(
        validate_prices(&negative),
        Err(PriceError::InvalidPrices { .. })
    ));
    // A null is an absent field, as LiteLLM writes it.
    let one: PriceTable = PriceTable::from_litellm_json(
        r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": null}}"#,
    )
    .expect("parses");
    assert!(one.invalid_models().is_empty());
    assert!(one.lookup(None, "m").is_some());
}

/// Regression: a table with every price 0 was accepted and no budget ever triggered.
#[test]
fn a_table_of_free_chat_models_is_refused() {
    let zero = bundled_edited(|e| {
        for k in ["input_cost_per_token", "output_cost_per_token"] {
            if e.contains_key(k) {
                e.insert(k.into(), Value::from(0));
            }
        }
    });
    let err = validate_update(&PriceTable::bundled(), &zero).expect_err("refused");
    assert!(matches!(err, PriceError::MostlyFree { .. }), "{err}");
    assert!(err.to_string().contains("chat models"), "{err}");
    let free_input = bundled_edited(|e| {
        if e.contains_key("input_cost_per_token") {
            e.insert("input_cost_per_token".into(), Value::from(0.0));
        }
    });
    assert!(matches!(
        validate_prices(&free_input),
        Err(PriceError::MostlyFree { .. })
    ));
}
