//! Masking free text before it is recorded: the model name, the request path, a refusal
//! message. These are not inspected as prompt text (a model name cannot be rewritten into
//! something the upstream accepts, a path cannot be redacted), but they land in the ledger, the
//! server log and the live events, which must never hold a raw value.

use crate::inspect::Engine;
use std::borrow::Cow;

/// [`Engine::mask_findings`] in place, for an owned field: every value the engine finds
/// (secret or personal data, whatever the policy says about it) replaced by its masked preview,
/// e.g. `ghp_****`.
pub fn mask_in_place(engine: &Engine, text: &mut String) {
    if let Cow::Owned(masked) = engine.mask_findings(text) {
        *text = masked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::testgen::Gen;
    use std::sync::LazyLock;

    static ENGINE: LazyLock<Engine> = LazyLock::new(|| Engine::new().expect("engine"));

    #[test]
    fn secrets_in_a_model_name_or_path_are_masked() {
        let mut g = Gen::new(7);
        let pat = g.github("ghp_");
        let model = ENGINE.mask_findings(&pat).into_owned();
        assert!(!model.contains(&pat[4..]), "{model}");
        assert!(model.starts_with("ghp_****"), "{model}");
        let path = format!("/v1beta/models/{pat}:generateContent");
        let masked = ENGINE.mask_findings(&path);
        assert!(!masked.contains(&pat[4..]), "{masked}");
        assert!(masked.starts_with("/v1beta/models/"), "{masked}");
        assert!(masked.ends_with(":generateContent"), "{masked}");
    }

    #[test]
    fn ordinary_model_names_and_paths_stay_as_they_are() {
        let mut names: Vec<String> = crate::meter::PriceTable::bundled()
            .model_names()
            .map(str::to_owned)
            .collect();
        names.extend(
            [
                "/v1/chat/completions",
                "/v1/messages",
                "/v1beta/models/gemini-1.5-pro-002:streamGenerateContent",
                "/v1/files/file-4Xq9ZbP2mT7kLw3nY8cR1a/content",
                "/v1/batches/batch_6789abcdef0123456789abcd",
                "/v1/responses/resp_67cb71b351908190a308f3859487620d06981a8637e6bc44",
                "ft:gpt-4o-mini-2024-07-18:my-org:custom-suffix:9abcDEF1",
            ]
            .map(str::to_owned),
        );
        assert!(names.len() > 100, "{}", names.len());
        for n in &names {
            assert!(
                matches!(ENGINE.mask_findings(n), Cow::Borrowed(_)),
                "{n} was masked"
            );
        }
    }
}
