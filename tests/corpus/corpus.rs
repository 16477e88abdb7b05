//! Labelled corpus generator: realistic prompts, chat messages and files with secrets and
//! personal data planted at known byte spans, plus look-alikes that must not be reported.
//!
//! Everything is generated from a fixed seed at test time (values come from the engine's
//! test generator, with valid checksums), so the repository holds no credential. Used by
//! `src-core/tests/scan_corpus.rs` (recall/precision gate) and, with `AIRLOCK_CORPUS_DIR` set,
//! to write the files used for the benchmarks in BENCHMARKS.md.

use airlock::inspect::testgen::Gen;

/// A planted value: its byte span and the family a finding must report.
#[derive(Debug, Clone)]
pub struct Label {
    pub start: usize,
    pub end: usize,
    pub family: &'static str,
    pub secret: bool,
}

/// One generated document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub name: String,
    pub text: String,
    pub labels: Vec<Label>,
}

struct Builder {
    text: String,
    labels: Vec<Label>,
}

impl Builder {
    fn s(&mut self, t: &str) -> &mut Self {
        self.text.push_str(t);
        self
    }

    fn v(&mut self, value: &str, family: &'static str, secret: bool) -> &mut Self {
        let start = self.text.len();
        self.text.push_str(value);
        self.labels.push(Label {
            start,
            end: self.text.len(),
            family,
            secret,
        });
        self
    }
}

fn x(g: &mut Gen, t: &str) -> String {
    g.expand(t)
        .unwrap_or_else(|e| panic!("corpus template {t:?}: {e}"))
}

const NAMES: &[&str] = &[
    "maria",
    "li.wei",
    "j.smith",
    "amelie.durand",
    "k.tanaka",
    "raj.patel",
    "sofia",
    "o.brien",
];
const MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "proton.me",
    "acme-corp.io",
    "uni-heidelberg.de",
    "yahoo.co.jp",
    "orange.fr",
];

/// A secret planted with a realistic surrounding line.
fn secret_line(g: &mut Gen, b: &mut Builder) {
    match g.below(24) {
        0 => {
            let k = x(g, "sk-proj-{{B:74}}T3BlbkFJ{{B:74}}");
            b.s("OPENAI_API_KEY=").v(&k, "openai", true).s("\n")
        }
        1 => {
            let k = x(g, "sk-ant-api03-{{B:93}}AA");
            b.s("client = anthropic.Anthropic(api_key=\"")
                .v(&k, "anthropic", true)
                .s("\")\n")
        }
        2 => {
            let p = *g.pick(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]);
            let k = g.github(p);
            b.s("git remote set-url origin https://")
                .v(&k, "github", true)
                .s("@github.com/acme/api.git\n")
        }
        3 => {
            let k = x(g, "AKIA{{z:16}}");
            let s = x(g, "{{b:40}}");
            b.s("[default]\naws_access_key_id = ")
                .v(&k, "aws", true)
                .s("\naws_secret_access_key = ")
                .v(&s, "aws", true)
                .s("\n")
        }
        4 => {
            let k = x(g, "AIza{{B:35}}");
            b.s("const genAI = new GoogleGenerativeAI(\"")
                .v(&k, "google", true)
                .s("\");\n")
        }
        5 => {
            let k = x(g, "xoxb-{{d:12}}-{{d:13}}-{{m:24}}");
            b.s("slack_token: ").v(&k, "slack", true).s("\n")
        }
        6 => {
            let k = x(
                g,
                "https://hooks.slack.com/services/T{{A:10}}/B{{A:10}}/{{m:24}}",
            );
            b.s("curl -X POST -d '{\"text\":\"deploy done\"}' ")
                .v(&k, "slack", true)
                .s("\n")
        }
        7 => {
            let k = x(g, "sk_live_{{m:99}}");
            b.s("stripe.api_key = \"").v(&k, "stripe", true).s("\"\n")
        }
        8 => {
            let label = *g.pick(&[
                "RSA PRIVATE KEY",
                "OPENSSH PRIVATE KEY",
                "PRIVATE KEY",
                "EC PRIVATE KEY",
            ]);
            let k = g.pem(label, "\n");
            b.s("Here is the key the server uses:\n")
                .v(&k, "private_key", true)
                .s("\n")
        }
        9 => {
            let k = g.jwt();
            b.s("Authorization: Bearer ").v(&k, "jwt", true).s("\n")
        }
        10 => {
            let pw = x(g, "{{s:20}}");
            b.s("DATABASE_URL=postgres://app_user:")
                .v(&pw, "database_url", true)
                .s("@db.prod.internal:5432/orders\n")
        }
        11 => {
            let pw = x(g, "{{m:24}}");
            b.s("MONGO_URI=\"mongodb+srv://svc:")
                .v(&pw, "database_url", true)
                .s("@cluster0.x1y2z.mongodb.net/app\"\n")
        }
        12 => {
            let pw = x(g, "{{s:18}}");
            b.s("db:\n  host: 10.0.3.4\n  user: reporting\n  password: \"")
                .v(&pw, "generic", true)
                .s("\"\n")
        }
        13 => {
            let k = x(g, "glpat-{{B:20}}");
            b.s("export GITLAB_TOKEN=").v(&k, "gitlab", true).s("\n")
        }
        14 => {
            let k = x(g, "hf_{{L:34}}");
            b.s("from huggingface_hub import login\nlogin(token=\"")
                .v(&k, "huggingface", true)
                .s("\")\n")
        }
        15 => {
            let k = x(g, "gsk_{{m:52}}");
            b.s("GROQ_API_KEY=").v(&k, "groq", true).s("\n")
        }
        16 => {
            let k = x(g, "npm_{{m:36}}");
            b.s("//registry.npmjs.org/:_authToken=")
                .v(&k, "npm", true)
                .s("\n")
        }
        17 => {
            let k = x(g, "{{m:32}}");
            b.s("MISTRAL_API_KEY=").v(&k, "mistral", true).s("\n")
        }
        18 => {
            let k = x(g, "SG.{{B:22}}.{{B:43}}");
            b.s("sendgrid.SendGridAPIClient('")
                .v(&k, "sendgrid", true)
                .s("')\n")
        }
        19 => {
            let k = x(g, "{{n:10}}:AA{{B:33}}");
            b.s("bot = telebot.TeleBot(\"")
                .v(&k, "telegram", true)
                .s("\")\n")
        }
        20 => {
            let k = x(g, "dop_v1_{{h:64}}");
            b.s("doctl auth init -t ")
                .v(&k, "digitalocean", true)
                .s("\n")
        }
        21 => {
            let k = x(
                g,
                "DefaultEndpointsProtocol=https;AccountName=prodlogs;AccountKey={{b:86}}==",
            );
            let at = k.find("AccountKey=").map_or(0, |i| i + "AccountKey=".len());
            b.s(&format!("AZURE_STORAGE_CONNECTION_STRING=\"{}", &k[..at]))
                .v(&k[at..], "azure", true)
                .s(";EndpointSuffix=core.windows.net\"\n")
        }
        22 => {
            let k = x(g, "xai-{{m:80}}");
            b.s("XAI_API_KEY=").v(&k, "xai", true).s("\n")
        }
        _ => {
            let k = x(g, "r8_{{m:37}}");
            b.s("replicate.Client(api_token=\"")
                .v(&k, "replicate", true)
                .s("\")\n")
        }
    };
}

/// Personal data planted in a sentence.
fn pii_line(g: &mut Gen, b: &mut Builder) {
    match g.below(20) {
        0 | 1 => {
            let e = format!("{}{}@{}", g.pick(NAMES), g.below(100), g.pick(MAIL_DOMAINS));
            b.s("Please forward the report to ")
                .v(&e, "email", false)
                .s(" before Friday.\n")
        }
        2 => {
            let p = x(g, "+44 20 3{{d:3}} {{d:4}}");
            b.s("You can reach me on ")
                .v(&p, "phone", false)
                .s(" most afternoons.\n")
        }
        3 => {
            let p = x(g, "({{n:3}}) {{n:3}}-{{d:4}}");
            b.s("Customer phone: ").v(&p, "phone", false).s("\n")
        }
        4 => {
            let p = x(g, "+49 30 {{n:3}}{{d:4}}");
            b.s("Telefon: ").v(&p, "phone", false).s("\n")
        }
        5 => {
            let p = x(g, "06 {{d:2}} {{d:2}} {{d:2}} {{d:2}}");
            b.s("Mon portable : ")
                .v(&p, "phone", false)
                .s(", merci de rappeler.\n")
        }
        6 => {
            let p = x(g, "+91 9{{d:4}} {{d:5}}");
            b.s("WhatsApp me at ").v(&p, "phone", false).s("\n")
        }
        7 => {
            let p = x(g, "090-{{d:4}}-{{d:4}}");
            b.s("携帯: ").v(&p, "phone", false).s("\n")
        }
        8 => {
            let kind = *g.pick(&["visa_spaced", "mc", "amex", "discover"]);
            let c = g.card(kind);
            b.s("The customer paid with card ")
                .v(&c, "card", false)
                .s(" exp 04/27 and it was declined.\n")
        }
        9 => {
            let cc = *g.pick(&["DE_spaced", "GB", "FR_spaced", "NL", "ES", "IT"]);
            let i = g.iban(cc);
            b.s("Refund to IBAN ").v(&i, "iban", false).s(" please.\n")
        }
        10 => {
            let s = g.ssn(false);
            b.s("Applicant SSN: ").v(&s, "national_id", false).s("\n")
        }
        11 => {
            let s = g.sin(false);
            b.s("Employee SIN ")
                .v(&s, "national_id", false)
                .s(" (Ontario)\n")
        }
        12 => {
            let a = g.aadhaar(false);
            b.s("Aadhaar no. ")
                .v(&a, "national_id", false)
                .s(" attached for KYC.\n")
        }
        13 => {
            let c = g.cpf(false);
            b.s("CPF do cliente: ").v(&c, "national_id", false).s("\n")
        }
        14 => {
            let d = if g.below(2) == 0 {
                g.dni(false)
            } else {
                g.nie(false)
            };
            b.s("DNI/NIE del titular: ")
                .v(&d, "national_id", false)
                .s("\n")
        }
        15 => {
            let n = x(g, "{{u:1}}");
            let first = *g.pick(&["A", "B", "C", "E", "H", "J", "K", "L", "M"]);
            let nino = format!(
                "{first}{} {} {} {} {}",
                n.replace(['D', 'F', 'G', 'I', 'N', 'O', 'Q', 'U', 'V'], "W"),
                x(g, "{{d:2}}"),
                x(g, "{{d:2}}"),
                x(g, "{{d:2}}"),
                g.pick(&["A", "B", "C", "D"])
            );
            b.s("National Insurance number: ")
                .v(&nino, "national_id", false)
                .s("\n")
        }
        16 => {
            let ip = g.ipv4();
            b.s("Failed login from ")
                .v(&ip, "ip_address", false)
                .s(" at 03:12 UTC\n")
        }
        17 => {
            let ip = g.ipv6();
            b.s("client connected from ")
                .v(&ip, "ip_address", false)
                .s("\n")
        }
        18 => {
            let a = if g.below(2) == 0 {
                g.btc(false)
            } else {
                g.bech32(false)
            };
            b.s("Send the payment to ")
                .v(&a, "crypto_address", false)
                .s(" today.\n")
        }
        _ => {
            let a = g.eth(false);
            b.s("My ETH wallet is ")
                .v(&a, "crypto_address", false)
                .s("\n")
        }
    };
}

/// Look-alikes: nothing here may be reported.
fn distractor_line(g: &mut Gen, b: &mut Builder) {
    let line = match g.below(22) {
        0 => x(g, "commit {{h:40}}\nAuthor: CI <ci@noreply>\n"),
        1 => x(
            g,
            "request_id = \"{{h:8}}-{{h:4}}-4{{h:3}}-8{{h:3}}-{{h:12}}\"\n",
        ),
        2 => x(g, "sha256sum: {{h:64}}  release.tar.gz\n"),
        3 => x(
            g,
            "<link rel=\"stylesheet\" href=\"/app.css\" integrity=\"sha384-{{b:64}}\">\n",
        ),
        4 => "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n".to_string(),
        5 => "OPENAI_API_KEY=sk-...\napi_key = \"your-api-key-here\"\n".to_string(),
        6 => "client = OpenAI(api_key=os.environ[\"OPENAI_API_KEY\"])\n".to_string(),
        7 => x(
            g,
            "Server listening on http://127.0.0.1:{{n:4}} and 10.0.{{d:1}}.{{n:1}}\n",
        ),
        8 => x(
            g,
            "Upgraded numpy from 1.{{d:2}}.2 to 2.1.{{d:1}} on 2024-0{{n:1}}-1{{d:1}}\n",
        ),
        9 => x(
            g,
            "Order #{{n:8}} shipped, total $1{{d:2}}.99, tracking 1Z{{A:16}}\n",
        ),
        10 => x(g, "test card {{card:bad}} should be rejected\n"),
        11 => x(g, "invalid IBAN {{iban:bad}} in fixture\n"),
        12 => x(
            g,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{{b:43}} deploy@ci\n",
        ),
        13 => x(
            g,
            "-----BEGIN CERTIFICATE-----\n{{b:64}}\n{{b:64}}\n-----END CERTIFICATE-----\n",
        ),
        14 => "Authorization: Bearer <token>\npassword: ${DB_PASSWORD}\n".to_string(),
        15 => x(
            g,
            "max_tokens: {{n:4}}\ntemperature: 0.{{d:1}}\nmodel: gpt-4o-mini\n",
        ),
        16 => "Contact support@example.com or see docs at https://docs.example.org/setup\n"
            .to_string(),
        17 => x(g, "timestamp={{n:10}} pid={{n:5}} duration_ms={{n:3}}\n"),
        18 => x(g, "git checkout {{h:7}} && cargo build --release\n"),
        19 => x(
            g,
            "The invoice {{n:4}}-{{n:4}} from March covers {{n:2}} seats.\n",
        ),
        20 => x(
            g,
            "SSN field uses format XXX-XX-XXXX; placeholder 000-00-0000\n",
        ),
        _ => x(g, "docker pull ghcr.io/acme/api@sha256:{{h:64}}\n"),
    };
    b.s(&line);
}

const PROSE: &[&str] = &[
    "I am trying to get this working but keep hitting an error.",
    "Can you refactor the function below so it is easier to test?",
    "Summarise the following notes for the weekly update.",
    "Why does the request time out after thirty seconds?",
    "Here is the config we deploy with; what should change for staging?",
    "Translate this message to German and keep the tone friendly.",
    "The tests pass locally but fail in CI, see the log.",
];

/// `n` documents from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<Doc> {
    let mut g = Gen::new(seed);
    let mut docs = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = Builder {
            text: String::new(),
            labels: Vec::new(),
        };
        let style = g.below(4);
        let ext = match style {
            0 => "prompt.txt",
            1 => "config.env",
            2 => "snippet.py",
            _ => "chat.md",
        };
        if style == 0 || style == 3 {
            let p: &&str = g.pick(PROSE);
            b.s(p).s("\n\n");
        }
        if style == 2 {
            b.s("import os\nimport requests\n\n");
        }
        let items = 1 + g.below(3);
        for _ in 0..items {
            match g.below(3) {
                0 => secret_line(&mut g, &mut b),
                1 => pii_line(&mut g, &mut b),
                _ => {}
            }
            distractor_line(&mut g, &mut b);
            if style != 1 {
                let p: &&str = g.pick(PROSE);
                b.s(p).s("\n");
            }
        }
        docs.push(Doc {
            name: format!("{i:04}-{ext}"),
            text: b.text,
            labels: b.labels,
        });
    }
    docs
}
