//! `airlock scan`: the detection engine over files, stdin, the staged git diff, or a watched
//! directory.
//!
//! Exit codes: 0 clean, 1 findings, 2 error. Output never contains a whole secret: only the
//! masked preview and a fingerprint (a SHA-256 over rule id and value, truncated).

use crate::inspect::{Engine, EngineBuilder, Finding, Kind, RuleOverrides};
use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Files are read in chunks this big; a secret up to `OVERLAP / 2` bytes long is never split.
const CHUNK: usize = 8 << 20;
const OVERLAP: usize = 64 << 10;
/// Bytes checked for a NUL to call a file binary.
const BINARY_SNIFF: usize = 8 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindFilter {
    All,
    Secret,
    Pii,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Files or directories to scan (recursively, honouring .gitignore); `-` reads stdin.
    pub paths: Vec<PathBuf>,
    /// Scan only the lines the staged diff adds (pre-commit mode).
    #[arg(long, conflicts_with_all = ["paths", "watch"])]
    pub staged: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Which findings to report.
    #[arg(long, value_enum, default_value_t = KindFilter::All)]
    pub kind: KindFilter,
    /// Accept the findings listed in this baseline file; fail only on new ones.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write all current findings to a baseline file and exit 0.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// Keep watching these directories and report new findings as files change.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub watch: Vec<PathBuf>,
    /// Suppression file of paths and fingerprints (default: `.airlockignore` in the current
    /// directory or repository root).
    #[arg(long, value_name = "FILE")]
    pub ignore_file: Option<PathBuf>,
    /// Extra rules, disabled ids and overrides, as TOML (the `RuleOverrides` schema).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

/// One reportable finding with its location.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    line: usize,
    col: usize,
    end_line: usize,
    end_col: usize,
    start: usize,
    end: usize,
    rule: String,
    kind: Kind,
    family: String,
    confidence: f32,
    preview: String,
    fingerprint: String,
}

pub fn run(args: ScanArgs) -> ExitCode {
    match run_inner(args) {
        Ok(true) => ExitCode::from(1),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock scan: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether unsuppressed findings were reported.
fn run_inner(args: ScanArgs) -> anyhow::Result<bool> {
    let overrides = match &args.rules {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            RuleOverrides::from_toml(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => RuleOverrides::default(),
    };
    let engine = EngineBuilder::new()
        .overrides(overrides)
        .build()
        .context("building the engine")?;
    let root = if args.staged {
        git_root()?
    } else {
        std::env::current_dir()?
    };
    let ignore_path = args
        .ignore_file
        .clone()
        .unwrap_or_else(|| root.join(".airlockignore"));
    let suppress = Suppressions::load(&ignore_path, &root, args.baseline.as_deref())?;
    let mut sink = Sink::new(args.format, args.write_baseline.is_some());
    let mut errors = 0usize;

    if !args.watch.is_empty() {
        if args.format == Format::Sarif {
            bail!("--watch prints findings as they appear; use --format text or json");
        }
        return watch(&engine, &args, &suppress, &mut sink);
    }

    if args.staged {
        scan_staged(&engine, &root, &args, &suppress, &mut sink)?;
    } else {
        let paths = if args.paths.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            args.paths.clone()
        };
        for p in &paths {
            if p.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading stdin")?;
                for hit in scan_bytes(&engine, "-", &buf, &args)? {
                    if !suppress.hides(&hit, line_of(&buf, hit.start)) {
                        sink.emit(hit)?;
                    }
                }
                continue;
            }
            if !p.exists() {
                eprintln!("airlock scan: {}: no such file or directory", p.display());
                errors += 1;
                continue;
            }
            for entry in walker(p) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("airlock scan: {e}");
                        errors += 1;
                        continue;
                    }
                };
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    continue;
                }
                let path = entry.path();
                if suppress.ignores_path(path) {
                    continue;
                }
                if let Err(e) = scan_file(&engine, path, &args, &suppress, &mut sink) {
                    eprintln!("airlock scan: {}: {e:#}", path.display());
                    errors += 1;
                }
            }
        }
    }
    let found = sink.finish(args.write_baseline.as_deref())?;
    if errors > 0 {
        bail!("{errors} path(s) could not be scanned");
    }
    Ok(found && args.write_baseline.is_none())
}

fn walker(p: &Path) -> ignore::Walk {
    ignore::WalkBuilder::new(p)
        .hidden(false) // `.env` files are the point
        .git_ignore(true)
        .git_global(false)
        .git_exclude(true)
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build()
}

fn display_path(p: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    let p = p.strip_prefix(&cwd).unwrap_or(p);
    let s = p.to_string_lossy().replace('\\', "/");
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

fn wanted(args: &ScanArgs, f: &Finding<'_>) -> bool {
    match args.kind {
        KindFilter::All => true,
        KindFilter::Secret => f.kind == Kind::Secret,
        KindFilter::Pii => f.kind == Kind::Pii,
    }
}

/// Stable fingerprint: never the value, only a truncated SHA-256 of rule id and value.
fn fingerprint(rule: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The line (1-based) holding byte `offset`, and its text.
fn line_of(buf: &[u8], offset: usize) -> &[u8] {
    let offset = offset.min(buf.len());
    let start = memchr::memrchr(b'\n', &buf[..offset]).map_or(0, |i| i + 1);
    let end = memchr::memchr(b'\n', &buf[offset..]).map_or(buf.len(), |i| offset + i);
    &buf[start..end]
}

/// Line/column tracker that walks forward through a buffer.
struct Cursor {
    pos: usize,
    line: usize,
    line_start: usize,
}

impl Cursor {
    fn new(line: usize) -> Self {
        Self {
            pos: 0,
            line,
            line_start: 0,
        }
    }

    /// (line, 1-based char column) of `offset`, which must not be before the last call's.
    fn at(&mut self, buf: &[u8], offset: usize) -> (usize, usize) {
        let offset = offset.min(buf.len());
        if offset < self.pos {
            *self =
                Cursor::new(self.line - memchr::memchr_iter(b'\n', &buf[offset..self.pos]).count());
            self.line_start = memchr::memrchr(b'\n', &buf[..offset]).map_or(0, |i| i + 1);
            self.pos = offset;
        }
        for i in memchr::memchr_iter(b'\n', &buf[self.pos..offset]) {
            self.line += 1;
            self.line_start = self.pos + i + 1;
        }
        self.pos = offset;
        let col = String::from_utf8_lossy(&buf[self.line_start..offset])
            .chars()
            .count()
            + 1;
        (self.line, col)
    }
}

/// Scans an in-memory buffer (stdin, small files) and returns located hits.
fn scan_bytes(
    engine: &Engine,
    path: &str,
    buf: &[u8],
    args: &ScanArgs,
) -> anyhow::Result<Vec<Hit>> {
    let mut hits = Vec::new();
    let mut cur = Cursor::new(1);
    engine.scan_bytes(buf, |f| {
        if wanted(args, f) {
            hits.push(locate(path, buf, 0, f, &mut cur));
        }
        true
    });
    Ok(hits)
}

fn locate(path: &str, buf: &[u8], base: usize, f: &Finding<'_>, cur: &mut Cursor) -> Hit {
    let (line, col) = cur.at(buf, f.span.start);
    let (end_line, end_col) = cur.at(buf, f.span.end);
    let value = String::from_utf8_lossy(&buf[f.span.clone()]);
    Hit {
        path: path.to_string(),
        line,
        col,
        end_line,
        end_col,
        start: base + f.span.start,
        end: base + f.span.end,
        rule: f.rule_id.to_string(),
        kind: f.kind,
        family: f.family.to_string(),
        confidence: f.confidence,
        preview: f.preview().to_string(),
        fingerprint: fingerprint(f.rule_id, &f.fingerprint_input(&value)),
    }
}

/// Scans a file in overlapping chunks, so large files use bounded memory.
fn scan_file(
    engine: &Engine,
    path: &Path,
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    for hit in scan_path_hits(engine, path, args)? {
        let line_text = line_text_in_file(path, hit.start)?;
        if !suppress.hides(&hit, &line_text) {
            sink.emit(hit)?;
        }
    }
    Ok(())
}

fn line_text_in_file(path: &Path, offset: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let from = offset.saturating_sub(4096);
    f.seek(SeekFrom::Start(from as u64))?;
    let mut buf = vec![0u8; 8192];
    let n = read_full(&mut f, &mut buf)?;
    buf.truncate(n);
    Ok(line_of(&buf, offset - from).to_vec())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn scan_path_hits(engine: &Engine, path: &Path, args: &ScanArgs) -> anyhow::Result<Vec<Hit>> {
    let mut file = std::fs::File::open(path).context("open")?;
    let shown = display_path(path);
    let mut hits = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut filled = read_full(&mut file, &mut buf)?;
    if buf[..filled.min(BINARY_SNIFF)].contains(&0) {
        return Ok(hits); // binary
    }
    let mut base = 0usize; // absolute offset of buf[0]
    let mut line_at_base = 1usize;
    loop {
        let last = filled < buf.len();
        let chunk = &buf[..filled];
        // Each chunk owns findings that start in its middle; the overlap halves belong to the
        // neighbours, so nothing is reported twice and nothing shorter than OVERLAP/2 is cut.
        let own_from = if base == 0 { 0 } else { OVERLAP / 2 };
        let own_to = if last {
            usize::MAX
        } else {
            filled - OVERLAP / 2
        };
        let mut cur = Cursor::new(line_at_base);
        engine.scan_bytes(chunk, |f| {
            if (own_from..own_to).contains(&f.span.start) && wanted(args, f) {
                hits.push(locate(&shown, chunk, base, f, &mut cur));
            }
            true
        });
        if last {
            break;
        }
        let keep_from = filled - OVERLAP;
        line_at_base += memchr::memchr_iter(b'\n', &chunk[..keep_from]).count();
        buf.copy_within(keep_from..filled, 0);
        base += keep_from;
        let n = read_full(&mut file, &mut buf[OVERLAP..])?;
        filled = OVERLAP + n;
        if n == 0 {
            break;
        }
    }
    Ok(hits)
}

// === Staged mode ===

fn git(root: Option<&Path>, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut cmd = std::process::Command::new("git");
    if let Some(r) = root {
        cmd.current_dir(r);
    }
    let out = cmd.args(args).output().context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn git_root() -> anyhow::Result<PathBuf> {
    let out = git(None, &["rev-parse", "--show-toplevel"])?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out).trim()))
}

/// One file's added lines: (path, [(new-file line number, text)]).
type AddedLines = (String, Vec<(usize, Vec<u8>)>);

/// Added lines per file from a `git diff -U0` patch.
fn parse_added_lines(diff: &[u8]) -> Vec<AddedLines> {
    let mut files: Vec<AddedLines> = Vec::new();
    let mut next_line = 0usize;
    for line in diff.split(|&b| b == b'\n') {
        if let Some(p) = line.strip_prefix(b"+++ ") {
            let p = String::from_utf8_lossy(p);
            let p = p.trim_matches('"');
            let p = p.strip_prefix("b/").unwrap_or(p);
            files.push((p.to_string(), Vec::new()));
        } else if line.starts_with(b"@@ ") {
            // @@ -a,b +c,d @@
            let text = String::from_utf8_lossy(line);
            next_line = text
                .split(' ')
                .find_map(|t| t.strip_prefix('+'))
                .and_then(|t| t.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(added) = line.strip_prefix(b"+") {
            if let Some((_, lines)) = files.last_mut() {
                lines.push((next_line, added.to_vec()));
                next_line += 1;
            }
        }
    }
    files.retain(|(p, lines)| p != "/dev/null" && !lines.is_empty());
    files
}

fn scan_staged(
    engine: &Engine,
    root: &Path,
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let diff = git(
        Some(root),
        &[
            "-c",
            "core.quotePath=false",
            "diff",
            "--cached",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--diff-filter=ACMR",
        ],
    )?;
    for (path, lines) in parse_added_lines(&diff) {
        if suppress.ignores_path(Path::new(&path)) {
            continue;
        }
        // Join the added lines; remember where each starts and which file line it is.
        let mut text = Vec::new();
        let mut starts = Vec::with_capacity(lines.len());
        for (no, l) in &lines {
            starts.push((text.len(), *no));
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        if text.contains(&0) {
            continue;
        }
        let mut found = Vec::new();
        engine.scan_bytes(&text, |f| {
            if wanted(args, f) {
                found.push((
                    f.span.clone(),
                    f.rule_id.to_string(),
                    f.kind,
                    f.family.to_string(),
                    f.confidence,
                    f.preview().to_string(),
                    fingerprint(
                        f.rule_id,
                        &f.fingerprint_input(&String::from_utf8_lossy(&text[f.span.clone()])),
                    ),
                ));
            }
            true
        });
        if found.is_empty() {
            continue;
        }
        // Byte offsets into the staged file need its line starts.
        let blob = git(Some(root), &["show", &format!(":{path}")]).unwrap_or_default();
        let mut line_starts = vec![0usize];
        line_starts.extend(memchr::memchr_iter(b'\n', &blob).map(|i| i + 1));
        let locate_at = |off: usize| {
            let idx = starts.partition_point(|&(s, _)| s <= off).saturating_sub(1);
            let (ls, no) = starts[idx];
            let col = String::from_utf8_lossy(&text[ls..off]).chars().count() + 1;
            let file_off = line_starts.get(no.saturating_sub(1)).copied().unwrap_or(0) + (off - ls);
            (no, col, file_off, idx)
        };
        for (span, rule, kind, family, confidence, preview, fp) in found {
            let (line, col, start, idx) = locate_at(span.start);
            let (end_line, end_col, end, _) = locate_at(span.end.saturating_sub(1).max(span.start));
            let hit = Hit {
                path: path.clone(),
                line,
                col,
                end_line,
                end_col: end_col + 1,
                start,
                end: end + 1,
                rule,
                kind,
                family,
                confidence,
                preview,
                fingerprint: fp,
            };
            if !suppress.hides(&hit, &lines[idx].1) {
                sink.emit(hit)?;
            }
        }
    }
    Ok(())
}

// === Suppressions ===

/// `.airlockignore` (gitignore-style path patterns and `fingerprint:HEX` lines), the baseline,
/// and the inline `airlock:allow` pragma.
struct Suppressions {
    root: PathBuf,
    paths: ignore::gitignore::Gitignore,
    fingerprints: HashSet<String>,
    baseline: HashSet<(String, String, String)>,
}

impl Suppressions {
    fn load(ignore_file: &Path, root: &Path, baseline: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
        let mut fingerprints = HashSet::new();
        if let Ok(text) = std::fs::read_to_string(ignore_file) {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(fp) = line.strip_prefix("fingerprint:") {
                    fingerprints.insert(fp.trim().to_ascii_lowercase());
                } else {
                    builder
                        .add_line(Some(ignore_file.to_path_buf()), line)
                        .with_context(|| {
                            format!("{}:{}: bad pattern", ignore_file.display(), i + 1)
                        })?;
                }
            }
        }
        let paths = builder.build().context("building .airlockignore matcher")?;
        let mut base = HashSet::new();
        if let Some(b) = baseline {
            let text = std::fs::read_to_string(b)
                .with_context(|| format!("reading baseline {}", b.display()))?;
            let doc: serde_json::Value =
                serde_json::from_str(&text).context("baseline is not JSON")?;
            for item in doc["findings"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let get = |k: &str| item[k].as_str().unwrap_or_default().to_string();
                base.insert((get("path"), get("rule"), get("fingerprint")));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            paths,
            fingerprints,
            baseline: base,
        })
    }

    fn ignores_path(&self, path: &Path) -> bool {
        gitignore_matches(&self.paths, &self.root, path)
    }

    fn hides(&self, hit: &Hit, line: &[u8]) -> bool {
        memchr::memmem::find(line, b"airlock:allow").is_some()
            || self.fingerprints.contains(&hit.fingerprint)
            || self.baseline.contains(&(
                hit.path.clone(),
                hit.rule.clone(),
                hit.fingerprint.clone(),
            ))
    }
}

/// Matches `path` (relative to the current directory, or absolute) against a gitignore whose
/// patterns are relative to `root`; paths outside `root` never match (the `ignore` crate would
/// panic on them).
fn gitignore_matches(gi: &ignore::gitignore::Gitignore, root: &Path, path: &Path) -> bool {
    let owned;
    let abs = if path.is_absolute() {
        path
    } else {
        owned = std::env::current_dir().unwrap_or_default().join(path);
        &owned
    };
    let clean: PathBuf = abs
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    match clean.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => {
            gi.matched_path_or_any_parents(rel, false).is_ignore()
        }
        _ => false,
    }
}

// === Output ===

struct Sink {
    format: Format,
    collect_only: bool,
    hits: Vec<Hit>,
    files: BTreeSet<String>,
    out: std::io::Stdout,
}

impl Sink {
    fn new(format: Format, collect_only: bool) -> Self {
        Self {
            format,
            collect_only,
            hits: Vec::new(),
            files: BTreeSet::new(),
            out: std::io::stdout(),
        }
    }

    fn emit(&mut self, hit: Hit) -> anyhow::Result<()> {
        if !self.collect_only {
            let mut out = self.out.lock();
            match self.format {
                Format::Text => writeln!(
                    out,
                    "{}:{}:{}: {} [{}/{}] {}",
                    hit.path,
                    hit.line,
                    hit.col,
                    hit.rule,
                    hit.kind.as_str(),
                    hit.family,
                    hit.preview
                )?,
                Format::Json => writeln!(out, "{}", json_line(&hit))?,
                Format::Sarif => {}
            }
            out.flush()?;
        }
        self.files.insert(hit.path.clone());
        self.hits.push(hit);
        Ok(())
    }

    /// Writes the SARIF document or baseline; returns whether anything was found.
    fn finish(&mut self, write_baseline: Option<&Path>) -> anyhow::Result<bool> {
        if let Some(path) = write_baseline {
            let mut items: Vec<_> = self
                .hits
                .iter()
                .map(|h| (h.path.clone(), h.rule.clone(), h.fingerprint.clone()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|(p, r, f)| serde_json::json!({"path": p, "rule": r, "fingerprint": f}))
                .collect();
            items.dedup();
            let doc = serde_json::json!({"version": 1, "tool": "airlock", "findings": items});
            std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "airlock scan: wrote {} finding(s) to baseline {}",
                self.hits.len(),
                path.display()
            );
            return Ok(!self.hits.is_empty());
        }
        if self.format == Format::Sarif {
            let doc = sarif(&self.hits);
            writeln!(self.out.lock(), "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        if self.format == Format::Text {
            if self.hits.is_empty() {
                eprintln!("airlock scan: no findings");
            } else {
                eprintln!(
                    "airlock scan: {} finding(s) in {} file(s)",
                    self.hits.len(),
                    self.files.len()
                );
            }
        }
        Ok(!self.hits.is_empty())
    }
}

fn json_line(h: &Hit) -> String {
    // Field order is part of the contract: path, line, start, end, rule, kind, preview first.
    let v = serde_json::json!({
        "path": h.path,
        "line": h.line,
        "start": h.start,
        "end": h.end,
        "rule": h.rule,
        "kind": h.kind.as_str(),
        "preview": h.preview,
        "column": h.col,
        "family": h.family,
        "confidence": (f64::from(h.confidence) * 100.0).round() / 100.0,
        "fingerprint": h.fingerprint,
    });
    v.to_string()
}

fn sarif(hits: &[Hit]) -> serde_json::Value {
    let mut rule_ids: Vec<(&str, Kind, &str)> = hits
        .iter()
        .map(|h| (h.rule.as_str(), h.kind, h.family.as_str()))
        .collect();
    rule_ids.sort_unstable_by(|a, b| a.0.cmp(b.0));
    rule_ids.dedup_by(|a, b| a.0 == b.0);
    let rules: Vec<_> = rule_ids
        .iter()
        .map(|(id, kind, family)| {
            serde_json::json!({
                "id": id,
                "name": id,
                "shortDescription": {"text": format!("{} ({})", id, kind.as_str())},
                "fullDescription": {"text": format!("Airlock rule {id}: a {} of family {family} was found.", kind.as_str())},
                "help": {"text": "Remove the value, rotate it if it is a credential, or suppress with an `airlock:allow` comment, .airlockignore or a baseline."},
                "defaultConfiguration": {"level": if *kind == Kind::Secret { "error" } else { "warning" }},
                "properties": {
                    "tags": ["security", kind.as_str(), family],
                    "security-severity": if *kind == Kind::Secret { "8.5" } else { "5.0" }
                }
            })
        })
        .collect();
    let results: Vec<_> = hits
        .iter()
        .map(|h| {
            let index = rule_ids.iter().position(|r| r.0 == h.rule).unwrap_or(0);
            serde_json::json!({
                "ruleId": h.rule,
                "ruleIndex": index,
                "level": if h.kind == Kind::Secret { "error" } else { "warning" },
                "message": {"text": format!("{} ({}, {}) found: {}", h.rule, h.kind.as_str(), h.family, h.preview)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": sarif_uri(&h.path), "uriBaseId": "%SRCROOT%"},
                        "region": {
                            "startLine": h.line,
                            "startColumn": h.col,
                            "endLine": h.end_line,
                            "endColumn": h.end_col.max(1),
                            "byteOffset": h.start,
                            "byteLength": h.end - h.start
                        }
                    }
                }],
                "partialFingerprints": {"airlockFingerprint/v1": h.fingerprint}
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "airlock", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": results
        }]
    })
}

/// `path` as a SARIF `artifactLocation.uri`, which must be a URI reference (RFC 3986): every
/// byte outside the unreserved and sub-delimiter characters is percent-encoded, so spaces and
/// non-ASCII names validate, `%` `?` `#` do not start an escape, query or fragment, and `:` does
/// not turn a first segment like `c:` into a scheme.
fn sarif_uri(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut uri = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=@".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push('%');
            uri.push(char::from(HEX[usize::from(b >> 4)]));
            uri.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    uri
}

// === Watch mode ===

fn watch(
    engine: &Engine,
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
) -> anyhow::Result<bool> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(tx).context("starting the file watcher")?;
    let mut seen: HashSet<(String, String, String)> = HashSet::new();
    let mut gitignores = Vec::new();
    for dir in &args.watch {
        if !dir.is_dir() {
            bail!("{}: not a directory", dir.display());
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        gitignores.push((
            ignore::gitignore::Gitignore::new(dir.join(".gitignore")).0,
            dir.clone(),
        ));
        // Report what is already there, once.
        for entry in walker(&dir).flatten() {
            if entry.file_type().is_some_and(|t| t.is_file())
                && !suppress.ignores_path(entry.path())
            {
                report_new(engine, entry.path(), args, suppress, sink, &mut seen);
            }
        }
    }
    eprintln!(
        "airlock scan: watching {} director{} (Ctrl-C to stop)",
        args.watch.len(),
        if args.watch.len() == 1 { "y" } else { "ies" }
    );
    for event in rx {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                eprintln!("airlock scan: watch error: {e}");
                continue;
            }
        };
        if !(event.kind.is_create() || event.kind.is_modify()) {
            continue;
        }
        for path in event.paths {
            let in_git = path.components().any(|c| c.as_os_str() == ".git");
            let ignored = gitignores
                .iter()
                .any(|(g, root)| gitignore_matches(g, root, &path));
            if in_git || ignored || !path.is_file() || suppress.ignores_path(&path) {
                continue;
            }
            report_new(engine, &path, args, suppress, sink, &mut seen);
        }
    }
    Ok(!sink.hits.is_empty())
}

fn report_new(
    engine: &Engine,
    path: &Path,
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
    seen: &mut HashSet<(String, String, String)>,
) {
    let hits = match scan_path_hits(engine, path, args) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("airlock scan: {}: {e:#}", path.display());
            return;
        }
    };
    for hit in hits {
        let key = (hit.path.clone(), hit.rule.clone(), hit.fingerprint.clone());
        let line = line_text_in_file(path, hit.start).unwrap_or_default();
        if suppress.hides(&hit, &line) || !seen.insert(key) {
            continue;
        }
        if let Err(e) = sink.emit(hit) {
            eprintln!("airlock scan: output: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_parsing_maps_new_line_numbers() {
        let diff = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,0 +2,2 @@\n+one\n+two\n@@ -9 +11 @@\n-old\n+new\n";
        let files = parse_added_lines(diff);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "x");
        let nums: Vec<usize> = files[0].1.iter().map(|(n, _)| *n).collect();
        assert_eq!(nums, vec![2, 3, 11]);
    }

    #[test]
    fn cursor_counts_lines_and_chars() {
        let buf = "ab\ncé d\nx".as_bytes();
        let mut c = Cursor::new(1);
        assert_eq!(c.at(buf, 0), (1, 1));
        assert_eq!(c.at(buf, 6), (2, 3)); // after "cé" (é is 2 bytes)
        assert_eq!(c.at(buf, 9), (3, 1));
        assert_eq!(c.at(buf, 1), (1, 2), "going back works too");
    }

    #[test]
    fn sarif_uri_percent_encodes_what_a_uri_path_cannot_hold() {
        assert_eq!(sarif_uri("src/main.rs"), "src/main.rs");
        assert_eq!(sarif_uri("-"), "-");
        assert_eq!(
            sarif_uri("docs/team notes/naïve #1 [draft].md"),
            "docs/team%20notes/na%C3%AFve%20%231%20%5Bdraft%5D.md"
        );
        assert_eq!(sarif_uri("100%?.txt"), "100%25%3F.txt");
        assert_eq!(sarif_uri("c:x/a+b(1).env"), "c%3Ax/a+b(1).env");
    }

    #[test]
    fn fingerprints_do_not_contain_the_value() {
        let fp = fingerprint("rule", "value-123");
        assert_eq!(fp.len(), 32);
        assert!(!fp.contains("value"));
    }
}
