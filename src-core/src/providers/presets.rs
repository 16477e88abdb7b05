//! Built-in providers. Each can be overridden or extended under `[providers.NAME]`.

use super::{AuthStyle, ProviderKind};

/// A built-in provider's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub kind: ProviderKind,
    pub upstream: &'static str,
    pub auth: AuthStyle,
    /// The SDK base URL suffix after `/<name>`, e.g. `/v1` for OpenAI-style SDKs.
    pub sdk_suffix: &'static str,
    /// Environment variables a `.env` file uses for this provider's key.
    pub env_keys: &'static [&'static str],
    /// The variable that SDKs read for the base URL.
    pub env_base_url: &'static str,
}

pub const PRESET_NAMES: [&str; 10] = [
    "openai",
    "anthropic",
    "gemini",
    "groq",
    "mistral",
    "openrouter",
    "deepseek",
    "together",
    "xai",
    "ollama",
];

pub fn preset(name: &str) -> Option<Preset> {
    use AuthStyle::*;
    use ProviderKind::*;
    let p = |kind, upstream, auth, sdk_suffix, env_keys, env_base_url| Preset {
        kind,
        upstream,
        auth,
        sdk_suffix,
        env_keys,
        env_base_url,
    };
    Some(match name {
        "openai" => p(
            OpenAi,
            "https://api.openai.com",
            Bearer,
            "/v1",
            &["OPENAI_API_KEY"],
            "OPENAI_BASE_URL",
        ),
        "anthropic" => p(
            Anthropic,
            "https://api.anthropic.com",
            XApiKey,
            "",
            &["ANTHROPIC_API_KEY"],
            "ANTHROPIC_BASE_URL",
        ),
        "gemini" => p(
            Gemini,
            "https://generativelanguage.googleapis.com",
            XGoogApiKey,
            "",
            &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
            "GOOGLE_GEMINI_BASE_URL",
        ),
        "groq" => p(
            OpenAiCompatible,
            "https://api.groq.com/openai",
            Bearer,
            "/v1",
            &["GROQ_API_KEY"],
            "GROQ_BASE_URL",
        ),
        "mistral" => p(
            OpenAiCompatible,
            "https://api.mistral.ai",
            Bearer,
            "/v1",
            &["MISTRAL_API_KEY"],
            "MISTRAL_BASE_URL",
        ),
        "openrouter" => p(
            OpenAiCompatible,
            "https://openrouter.ai/api",
            Bearer,
            "/v1",
            &["OPENROUTER_API_KEY"],
            "OPENROUTER_BASE_URL",
        ),
        "deepseek" => p(
            OpenAiCompatible,
            "https://api.deepseek.com",
            Bearer,
            "/v1",
            &["DEEPSEEK_API_KEY"],
            "DEEPSEEK_BASE_URL",
        ),
        "together" => p(
            OpenAiCompatible,
            "https://api.together.xyz",
            Bearer,
            "/v1",
            &["TOGETHER_API_KEY"],
            "TOGETHER_BASE_URL",
        ),
        "xai" => p(
            OpenAiCompatible,
            "https://api.x.ai",
            Bearer,
            "/v1",
            &["XAI_API_KEY"],
            "XAI_BASE_URL",
        ),
        "ollama" => p(
            OpenAiCompatible,
            "http://127.0.0.1:11434",
            None,
            "/v1",
            &[],
            "OLLAMA_BASE_URL",
        ),
        _ => return Option::None,
    })
}
