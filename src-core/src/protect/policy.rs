//! What happens to each finding: `block`, `redact`, `pseudonymize`, `warn` or `allow`, set per
//! kind, family or single rule, in layers (built-in defaults, global, provider, Airlock key), and
//! only ever tightened by a project's `airlock.toml`.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Ordered from least to most strict.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Warn,
    Pseudonymize,
    Redact,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Warn => "warn",
            Action::Pseudonymize => "pseudonymize",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

/// A body Airlock cannot inspect: refuse it (the default) or let it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unparseable {
    #[default]
    Block,
    Passthrough,
}

/// One layer as written in TOML.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LayerFile {
    pub secret: Option<Action>,
    pub pii: Option<Action>,
    pub injection: Option<Action>,
    pub families: BTreeMap<String, Action>,
    pub rules: BTreeMap<String, Action>,
    pub unparseable: Option<Unparseable>,
}

/// What is done to secrets found in responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputAction {
    #[default]
    Redact,
    Warn,
    Allow,
}

/// Markdown images and links to unknown hosts that carry data in their query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkAction {
    #[default]
    Neutralize,
    Warn,
    Allow,
}

/// `[policy]` in the config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(flatten)]
    pub global: LayerFile,
    /// How long a conversation's pseudonym mapping lives after its last use (default 1h).
    pub pseudonym_ttl: Option<String>,
    pub output_secrets: Option<OutputAction>,
    pub exfil_links: Option<LinkAction>,
    /// Hosts that links and images in responses may point at with a query string.
    pub link_allowlist: Vec<String>,
    /// Score at which prompt-injection heuristics raise a finding (default 1.0).
    pub injection_threshold: Option<f32>,
    pub providers: BTreeMap<String, LayerFile>,
    pub keys: BTreeMap<String, LayerFile>,
}

/// The resolved policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    global: LayerFile,
    providers: HashMap<String, LayerFile>,
    keys: HashMap<String, LayerFile>,
    pub pseudonym_ttl: Duration,
    pub output_secrets: OutputAction,
    pub exfil_links: LinkAction,
    pub link_allowlist: Vec<String>,
    pub injection_threshold: f32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            global: LayerFile::default(),
            providers: HashMap::new(),
            keys: HashMap::new(),
            pseudonym_ttl: Duration::from_secs(3600),
            output_secrets: OutputAction::Redact,
            exfil_links: LinkAction::Neutralize,
            link_allowlist: Vec::new(),
            injection_threshold: 1.0,
        }
    }
}

/// What a finding is, for policy lookup.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// `secret`, `pii` or `injection`.
    pub kind: &'a str,
    pub family: &'a str,
    pub rule: &'a str,
}

/// The built-in defaults: secrets redacted, private keys blocked, PII pseudonymized, prompt
/// injection flagged.
fn default_action(s: &Subject<'_>) -> Action {
    match (s.kind, s.family) {
        (_, "private_key") => Action::Block,
        ("secret", _) => Action::Redact,
        ("pii", _) => Action::Pseudonymize,
        _ => Action::Warn,
    }
}

impl LayerFile {
    /// This layer's most specific setting for `s`, if it has one.
    fn setting(&self, s: &Subject<'_>) -> Option<Action> {
        self.rules
            .get(s.rule)
            .or_else(|| self.families.get(s.family))
            .copied()
            .or(match s.kind {
                "secret" => self.secret,
                "pii" => self.pii,
                "injection" => self.injection,
                _ => None,
            })
    }
}

impl Policy {
    pub fn from_file(f: PolicyFile) -> Result<Policy, String> {
        let d = Policy::default();
        let ttl = match &f.pseudonym_ttl {
            Some(t) => crate::config::parse_duration(t)?,
            None => d.pseudonym_ttl,
        };
        let threshold = f.injection_threshold.unwrap_or(d.injection_threshold);
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(format!(
                "injection_threshold {threshold} must be a positive number"
            ));
        }
        Ok(Policy {
            global: f.global,
            providers: f.providers.into_iter().collect(),
            keys: f.keys.into_iter().collect(),
            pseudonym_ttl: ttl,
            output_secrets: f.output_secrets.unwrap_or_default(),
            exfil_links: f.exfil_links.unwrap_or_default(),
            link_allowlist: f
                .link_allowlist
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            injection_threshold: threshold,
        })
    }

    /// The configured layers that apply, most precedent first: key, provider, global.
    fn layers<'a>(
        &'a self,
        provider: &str,
        account: Option<&str>,
    ) -> impl Iterator<Item = &'a LayerFile> {
        [
            account.and_then(|a| self.keys.get(a)),
            self.providers.get(provider),
            Some(&self.global),
        ]
        .into_iter()
        .flatten()
    }

    /// The action for a finding: the most precedent layer with a setting wins (key over provider
    /// over global over the defaults), then a project layer may only make it stricter.
    pub fn action(
        &self,
        s: &Subject<'_>,
        provider: &str,
        account: Option<&str>,
        project: Option<&LayerFile>,
    ) -> Action {
        let base = self
            .layers(provider, account)
            .find_map(|l| l.setting(s))
            .unwrap_or_else(|| default_action(s));
        match project.and_then(|p| p.setting(s)) {
            Some(p) => base.max(p),
            None => base,
        }
    }

    pub fn unparseable(
        &self,
        provider: &str,
        account: Option<&str>,
        project: Option<&LayerFile>,
    ) -> Unparseable {
        let base = self
            .layers(provider, account)
            .find_map(|l| l.unparseable)
            .unwrap_or_default();
        // A project can only tighten: block wins.
        match project.and_then(|p| p.unparseable) {
            Some(Unparseable::Block) => Unparseable::Block,
            _ => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        Policy::from_file(toml::from_str(toml).expect("toml")).expect("policy")
    }

    const AWS: Subject<'static> = Subject {
        kind: "secret",
        family: "aws",
        rule: "aws-access-key-id",
    };
    const PEM: Subject<'static> = Subject {
        kind: "secret",
        family: "private_key",
        rule: "pem-private-key",
    };
    const MAIL: Subject<'static> = Subject {
        kind: "pii",
        family: "email",
        rule: "email",
    };
    const INJ: Subject<'static> = Subject {
        kind: "injection",
        family: "injection",
        rule: "prompt-injection",
    };

    #[test]
    fn defaults() {
        let p = Policy::default();
        assert_eq!(p.action(&AWS, "openai", None, None), Action::Redact);
        assert_eq!(p.action(&PEM, "openai", None, None), Action::Block);
        assert_eq!(p.action(&MAIL, "openai", None, None), Action::Pseudonymize);
        assert_eq!(p.action(&INJ, "openai", None, None), Action::Warn);
        assert_eq!(p.unparseable("openai", None, None), Unparseable::Block);
    }

    #[test]
    fn layers_and_specificity() {
        let p = policy(
            r#"
            pii = "redact"
            [families]
            email = "warn"
            [rules]
            "aws-access-key-id" = "block"
            [providers.ollama]
            pii = "allow"
            unparseable = "passthrough"
            [keys.strict]
            secret = "block"
            pii = "block"
            "#,
        );
        assert_eq!(
            p.action(&MAIL, "openai", None, None),
            Action::Warn,
            "family beats kind in one layer"
        );
        assert_eq!(p.action(&AWS, "openai", None, None), Action::Block);
        assert_eq!(
            p.action(&MAIL, "ollama", None, None),
            Action::Allow,
            "provider layer beats global"
        );
        assert_eq!(
            p.action(&MAIL, "ollama", Some("strict"), None),
            Action::Block,
            "key layer beats provider"
        );
        assert_eq!(
            p.unparseable("ollama", None, None),
            Unparseable::Passthrough
        );
    }

    #[test]
    fn a_project_only_tightens() {
        let p = policy("pii = \"allow\"");
        let loosen: LayerFile = toml::from_str("secret = \"allow\"").expect("toml");
        let tighten: LayerFile =
            toml::from_str("pii = \"block\"\nunparseable = \"block\"").expect("toml");
        assert_eq!(
            p.action(&AWS, "openai", None, Some(&loosen)),
            Action::Redact
        );
        assert_eq!(
            p.action(&MAIL, "openai", None, Some(&tighten)),
            Action::Block
        );
    }
}
