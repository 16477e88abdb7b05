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
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Files are read in chunks this big; a secret up to `OVERLAP / 2` bytes long is never split.
const CHUNK: usize = 8 << 20;
const OVERLAP: usize = 64 << 10;
/// Bytes checked for a NUL to call a file binary.
const BINARY_SNIFF: usize = 8 << 10;
/// A UTF-16 file is decoded whole; one larger than this is an error, not skipped.
const MAX_UTF16: usize = 256 << 20;
/// Bytes looked at to tell UTF-16 without a byte order mark.
const UTF16_SNIFF: usize = 512;

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
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with = "paths")]
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

/// One line on stderr: masked, since a path can hold a pasted secret, and with control
/// characters escaped, since a file name can hold a terminal escape or a line break.
fn warn(engine: &Engine, text: &str) {
    eprintln!(
        "airlock scan: {}",
        escape_controls(&engine.mask_findings(text))
    );
}

/// `text` with each control character (a line break, ESC, DEL, …) written as `\u{..}`, so a
/// crafted file name cannot forge an output line or drive the terminal.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out.into()
}

pub fn run(ctx: &super::Ctx, args: ScanArgs) -> ExitCode {
    match run_inner(ctx, args) {
        Ok(true) => ExitCode::from(1),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock scan: error: {}", super::shown_error(&e));
            ExitCode::from(2)
        }
    }
}

/// The config's `[rules]` (the proxy's own rule set), then the `--rules` file's on top.
fn rule_overrides(ctx: &super::Ctx, args: &ScanArgs) -> anyhow::Result<RuleOverrides> {
    let mut o = ctx.load_config()?.rules;
    if let Some(p) = &args.rules {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let extra =
            RuleOverrides::from_toml(&text).with_context(|| format!("parsing {}", p.display()))?;
        o.disabled.extend(extra.disabled);
        o.disabled_families.extend(extra.disabled_families);
        for rule in extra.rules {
            o.rules.retain(|r| r.id != rule.id);
            o.rules.push(rule);
        }
        o.overrides.extend(extra.overrides);
        o.min_confidence = extra.min_confidence.or(o.min_confidence);
        o.allowlist.extend(extra.allowlist);
        o.include_private_ips |= extra.include_private_ips;
    }
    Ok(o)
}

/// Returns whether unsuppressed findings were reported.
fn run_inner(ctx: &super::Ctx, args: ScanArgs) -> anyhow::Result<bool> {
    let overrides = rule_overrides(ctx, &args)?;
    let engine = EngineBuilder::new()
        .overrides(overrides)
        .build()
        .with_context(|| match &args.rules {
            Some(p) => format!("the rules of the config and {}", p.display()),
            None => "the rules of the config".to_string(),
        })?;
    let root = if args.staged {
        git_root()?
    } else {
        std::env::current_dir()?
    };
    let ignore_path = args
        .ignore_file
        .clone()
        .unwrap_or_else(|| root.join(".airlockignore"));
    if let Some(p) = &args.ignore_file {
        if !p.is_file() {
            bail!("--ignore-file {}: no such file", p.display());
        }
    }
    // A new baseline holds every current finding, the ones the old one accepted too.
    let baseline = args
        .baseline
        .as_deref()
        .filter(|_| args.write_baseline.is_none());
    let suppress = Suppressions::load(&ignore_path, &root, baseline)?;
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
        // A file named twice (`a.env ./a.env`, or a directory and a file in it) is scanned once.
        let mut scanned: HashSet<PathBuf> = HashSet::new();
        for p in &paths {
            if p.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading stdin")?;
                emit_buffer(&engine, "-", &buf, &args, &suppress, &mut sink)?;
                continue;
            }
            let meta = match std::fs::metadata(p) {
                Ok(m) => m,
                Err(e) => {
                    warn(&engine, &format!("{}: {}", p.display(), io_reason(&e)));
                    errors += 1;
                    continue;
                }
            };
            if !meta.is_dir() && !meta.is_file() {
                // A pipe, FIFO or device named on the command line (`<(cmd)`, `/dev/stdin`):
                // read it as a stream. Inside a directory such files are skipped, as git does.
                if let Err(e) = scan_file(&engine, p, false, &args, &suppress, &mut sink) {
                    if is_output_error(&e) {
                        return Err(e);
                    }
                    warn(&engine, &format!("{}: {e:#}", p.display()));
                    errors += 1;
                }
                continue;
            }
            for entry in walker(p) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        warn(&engine, &e.to_string());
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
                if !scanned.insert(path.canonicalize().unwrap_or_else(|_| path.to_path_buf())) {
                    continue;
                }
                if let Err(e) = scan_file(&engine, path, true, &args, &suppress, &mut sink) {
                    if is_output_error(&e) {
                        return Err(e);
                    }
                    warn(&engine, &format!("{}: {e:#}", path.display()));
                    errors += 1;
                }
            }
        }
    }
    let found = sink.finish(args.write_baseline.as_deref(), errors)?;
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
fn fingerprint(rule: &str, value: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    h.update(value);
    hex::encode(&h.finalize()[..16])
}

const PRAGMA: &[u8] = b"airlock:allow";

/// The line holding byte `offset`, without its line break: the pragma's reach. A lone `\r`
/// ends a line here too, so in a file with old Mac line endings a pragma covers its own line,
/// not the whole file (lines are still numbered by `\n`, as git numbers them).
fn line_of(buf: &[u8], offset: usize) -> &[u8] {
    let offset = offset.min(buf.len());
    let start = memchr::memrchr2(b'\n', b'\r', &buf[..offset]).map_or(0, |i| i + 1);
    let end = memchr::memchr2(b'\n', b'\r', &buf[offset..]).map_or(buf.len(), |i| offset + i);
    &buf[start..end]
}

/// The `airlock:allow` test for findings in order of position: each line is found and
/// searched once, however many findings it holds (a minified file can hold thousands on one
/// line; searching the line again for each made a scan quadratic).
#[derive(Default)]
struct PragmaLines(Option<(Range<usize>, bool)>);

impl PragmaLines {
    /// The line holding byte `offset` (as [`line_of`] finds it) and whether it has the pragma.
    fn at(&mut self, buf: &[u8], offset: usize) -> (Range<usize>, bool) {
        let offset = offset.min(buf.len());
        match &self.0 {
            Some((line, has)) if line.start <= offset && offset <= line.end => (line.clone(), *has),
            _ => {
                let line = line_of(buf, offset);
                let start = line.as_ptr() as usize - buf.as_ptr() as usize;
                let found = (
                    start..start + line.len(),
                    memchr::memmem::find(line, PRAGMA).is_some(),
                );
                self.0 = Some(found.clone());
                found
            }
        }
    }
}

/// Char columns of offsets that come in order: counted on from the previous offset of the
/// same line, not from the line's start each time.
#[derive(Default)]
struct Columns {
    line_start: usize,
    pos: usize,
    chars: usize,
}

impl Columns {
    /// Chars in `buf[line_start..offset]`.
    fn count(&mut self, buf: &[u8], line_start: usize, offset: usize) -> usize {
        if line_start != self.line_start || offset < self.pos || self.pos < line_start {
            *self = Self {
                line_start,
                pos: line_start,
                chars: 0,
            };
        }
        self.chars += chars_in(&buf[self.pos..offset]);
        self.pos = offset;
        self.chars
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

/// Chars in UTF-8 `bytes`, counting each byte of an invalid sequence as one (as a lossy decode
/// would, near enough), and exact however the text is cut into pieces.
fn chars_in(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count()
}

/// Line/column tracker that walks forward through a buffer.
struct Cursor {
    pos: usize,
    line: usize,
    line_start: usize,
    /// Chars of the first line that lie before the buffer (a chunk starting mid-line).
    first_col: usize,
    first_line: usize,
    cols: Columns,
}

impl Cursor {
    fn new(line: usize) -> Self {
        Self::within_line(line, 0)
    }

    /// A cursor for a buffer that starts `col` chars into line `line`.
    fn within_line(line: usize, col: usize) -> Self {
        Self {
            pos: 0,
            line,
            line_start: 0,
            first_col: col,
            first_line: line,
            cols: Columns::default(),
        }
    }

    /// (line, 1-based char column) of `offset`, which must not be before the last call's.
    fn at(&mut self, buf: &[u8], offset: usize) -> (usize, usize) {
        let offset = offset.min(buf.len());
        if offset < self.pos {
            let line = self.line - memchr::memchr_iter(b'\n', &buf[offset..self.pos]).count();
            self.line = line;
            self.line_start = memchr::memrchr(b'\n', &buf[..offset]).map_or(0, |i| i + 1);
            self.pos = offset;
        }
        for i in memchr::memchr_iter(b'\n', &buf[self.pos..offset]) {
            self.line += 1;
            self.line_start = self.pos + i + 1;
        }
        self.pos = offset;
        let before = if self.line == self.first_line {
            self.first_col
        } else {
            0
        };
        (
            self.line,
            before + self.cols.count(buf, self.line_start, offset) + 1,
        )
    }
}

fn locate(path: &str, buf: &[u8], base: usize, f: &Finding<'_>, cur: &mut Cursor) -> Hit {
    let (line, col) = cur.at(buf, f.span.start);
    let (end_line, end_col) = cur.at(buf, f.span.end);
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
        fingerprint: fingerprint(f.rule_id, &f.fingerprint_bytes(buf)),
    }
}

/// Scans an in-memory buffer (stdin) and reports what no suppression hides.
fn emit_buffer(
    engine: &Engine,
    path: &str,
    buf: &[u8],
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    if let Some(order) = utf16_of(buf) {
        for (hit, pragma) in scan_utf16(engine, path, buf, order, args) {
            if !suppress.hides(&hit, pragma) {
                sink.emit(hit)?;
            }
        }
        return Ok(());
    }
    let mut hits = Vec::new();
    let mut cur = Cursor::new(1);
    engine.scan_bytes(buf, |f| {
        if wanted(args, f) {
            hits.push(locate(path, buf, 0, f, &mut cur));
        }
        true
    });
    let mut lines = PragmaLines::default();
    for hit in hits {
        let (_, pragma) = lines.at(buf, hit.start);
        if !suppress.hides(&hit, pragma) {
            sink.emit(hit)?;
        }
    }
    Ok(())
}

/// Scans a file in overlapping chunks, so large files use bounded memory. `seekable` is false
/// for a pipe or device named on the command line, read once front to back: a line longer than
/// a chunk is then judged by the part the chunk holds.
fn scan_file(
    engine: &Engine,
    path: &Path,
    seekable: bool,
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).context("open")?;
    let reread = seekable.then_some(path);
    for (hit, pragma) in scan_reader(engine, &display_path(path), file, reread, args)? {
        if !suppress.hides(&hit, pragma) {
            sink.emit(hit)?;
        }
    }
    Ok(())
}

/// Whether the whole line of `path` holding byte `offset` has the pragma: read outwards from
/// `offset` in blocks until both line breaks (for a line longer than a chunk). Each block is
/// searched as it is read, with the pragma's length less one byte carried over so a pragma
/// across two blocks is found; the line is never held whole.
fn pragma_in_file(path: &Path, offset: usize) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    const BLOCK: usize = 64 << 10;
    let carry = PRAGMA.len() - 1;
    let mut f = std::fs::File::open(path)?;
    // Backwards to the line's start: `buf` is a block followed by the start of the one after.
    let mut buf = vec![0u8; BLOCK + carry];
    let mut next: Vec<u8> = Vec::new();
    let mut end = offset;
    let mut line_start = 0;
    while end > 0 {
        let from = end.saturating_sub(BLOCK);
        f.seek(SeekFrom::Start(from as u64))?;
        let n = read_full(&mut f, &mut buf[..end - from])?;
        let start = memchr::memrchr2(b'\n', b'\r', &buf[..n]).map_or(0, |i| i + 1);
        let kept = next.len().min(carry);
        buf[n..n + kept].copy_from_slice(&next[..kept]);
        if memchr::memmem::find(&buf[start..n + kept], PRAGMA).is_some() {
            return Ok(true);
        }
        if start > 0 || n < end - from {
            line_start = from + start;
            break;
        }
        next = buf[..carry.min(n)].to_vec();
        end = from;
    }
    // Forwards to its end, from the pragma's length before `offset` (the part read above), but
    // not before the line's start.
    let from = offset.saturating_sub(carry).max(line_start);
    f.seek(SeekFrom::Start(from as u64))?;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = read_full(&mut f, &mut buf[..BLOCK])?;
        let got = &buf[..n];
        let stop = memchr::memchr2(b'\n', b'\r', got);
        tail.extend_from_slice(&got[..stop.unwrap_or(n)]);
        if memchr::memmem::find(&tail, PRAGMA).is_some() {
            return Ok(true);
        }
        if stop.is_some() || n < BLOCK {
            return Ok(false);
        }
        tail.drain(..tail.len() - carry);
    }
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

/// Every wanted finding in `reader` with whether its line carries the `airlock:allow` pragma,
/// read in overlapping chunks. `file` is where to read a line longer than a chunk again from
/// (`None` for a stream: such a line is judged by the part the chunk holds).
fn scan_reader(
    engine: &Engine,
    shown: &str,
    mut reader: impl Read,
    file: Option<&Path>,
    args: &ScanArgs,
) -> anyhow::Result<Vec<(Hit, bool)>> {
    let mut hits = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut filled = read_full(&mut reader, &mut buf)?;
    if let Some(order) = utf16_of(&buf[..filled]) {
        // Decoded whole: read the rest, up to the limit.
        buf.truncate(filled);
        let room = (MAX_UTF16 + 1).saturating_sub(filled) as u64;
        (&mut reader).take(room).read_to_end(&mut buf)?;
        if buf.len() > MAX_UTF16 {
            bail!("UTF-16 text over {} MiB is not scanned", MAX_UTF16 >> 20);
        }
        return Ok(scan_utf16(engine, shown, &buf, order, args));
    }
    if buf[..filled.min(BINARY_SNIFF)].contains(&0) {
        return Ok(hits); // binary
    }
    let mut base = 0usize; // absolute offset of buf[0]
    let mut line_at_base = 1usize;
    let mut col_at_base = 0usize;
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
        let mut cur = Cursor::within_line(line_at_base, col_at_base);
        let mut found = Vec::new();
        engine.scan_bytes(chunk, |f| {
            if (own_from..own_to).contains(&f.span.start) && wanted(args, f) {
                found.push(locate(shown, chunk, base, f, &mut cur));
            }
            true
        });
        let mut lines = PragmaLines::default();
        // A line cut by the chunk's edges is read again from the file, once.
        let mut cut_line: Option<(Range<usize>, bool)> = None;
        for hit in found {
            let (line, has) = lines.at(chunk, hit.start - base);
            let cut = (line.start == 0 && base > 0) || (line.end == filled && !last);
            let pragma = match file {
                Some(path) if cut => match &cut_line {
                    Some((l, pragma)) if *l == line => *pragma,
                    _ => {
                        let pragma = pragma_in_file(path, hit.start)?;
                        cut_line = Some((line, pragma));
                        pragma
                    }
                },
                _ => has,
            };
            hits.push((hit, pragma));
        }
        if last {
            break;
        }
        let keep_from = filled - OVERLAP;
        let dropped = &chunk[..keep_from];
        line_at_base += memchr::memchr_iter(b'\n', dropped).count();
        col_at_base = match memchr::memrchr(b'\n', dropped) {
            Some(i) => chars_in(&dropped[i + 1..]),
            None => col_at_base + chars_in(dropped),
        };
        buf.copy_within(keep_from..filled, 0);
        base += keep_from;
        // At the end of the input the loop goes round once more, with `last` set, so the kept
        // overlap's second half (owned by no chunk yet) is reported.
        let n = read_full(&mut reader, &mut buf[OVERLAP..])?;
        filled = OVERLAP + n;
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

/// Added lines per file from a `git diff -U0` patch made with the prefixes `a/` and `b/`.
///
/// Inside a hunk the header's counts say how many removed and added lines follow, so a line of
/// content never passes for a header (an added line reading `++ b/other` is the text
/// `+ b/other`). A file's path comes from its `+++ b/…` line: quoted by git when it holds a
/// quote, backslash or control character, and followed by a tab when it holds a space.
fn parse_added_lines(diff: &[u8]) -> Vec<AddedLines> {
    let mut files: Vec<AddedLines> = Vec::new();
    let (mut removed_left, mut added_left, mut next_line) = (0usize, 0usize, 0usize);
    for line in diff.split(|&b| b == b'\n') {
        if removed_left + added_left > 0 {
            if removed_left > 0 && line.first() == Some(&b'-') {
                removed_left -= 1;
                continue;
            }
            if line.first() == Some(&b'\\') {
                continue; // "\ No newline at end of file"
            }
            if let (true, Some(added)) = (added_left > 0, line.strip_prefix(b"+")) {
                added_left -= 1;
                if let Some((_, lines)) = files.last_mut() {
                    lines.push((next_line, added.to_vec()));
                }
                next_line += 1;
                continue;
            }
            // A malformed hunk: stop trusting its counts.
            (removed_left, added_left) = (0, 0);
        }
        if let Some(p) = line.strip_prefix(b"+++ ") {
            let path = diff_path(p);
            files.push((path.unwrap_or_default(), Vec::new()));
        } else if let Some(header) = line.strip_prefix(b"@@ -") {
            // @@ -a[,b] +c[,d] @@
            let text = String::from_utf8_lossy(header);
            let mut parts = text.split(' ');
            let count = |t: Option<&str>| -> Option<(usize, usize)> {
                let t = t?;
                let (start, n) = t.split_once(',').unwrap_or((t, "1"));
                Some((start.parse().ok()?, n.parse().ok()?))
            };
            let old = count(parts.next());
            let new = count(parts.next().and_then(|t| t.strip_prefix('+')));
            if let (Some((_, b)), Some((c, d))) = (old, new) {
                (removed_left, added_left, next_line) = (b, d, c);
            }
        }
    }
    files.retain(|(p, lines)| !p.is_empty() && !lines.is_empty());
    files
}

/// The path on a `+++ ` line: `b/` stripped, git's C-style quoting undone, and the tab git
/// adds after a name with a space dropped. `None` for `/dev/null`.
fn diff_path(raw: &[u8]) -> Option<String> {
    let bytes: Vec<u8> = if raw.first() == Some(&b'"') {
        unquote_c(&raw[1..])
    } else {
        let end = raw.iter().position(|&b| b == b'\t').unwrap_or(raw.len());
        raw[..end].to_vec()
    };
    let path = bytes.strip_prefix(b"b/")?;
    Some(String::from_utf8_lossy(path).into_owned())
}

/// Undoes git's quoting of a path (after the opening quote, up to the closing one):
/// `\"`, `\\`, `\t`, `\n` and the other C escapes, and `\ooo` octal bytes.
fn unquote_c(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => break,
            b'\\' if i + 1 < s.len() => {
                let c = s[i + 1];
                i += 2;
                let octal = |b: u8| (b'0'..=b'7').contains(&b);
                if octal(c) && i + 1 < s.len() && octal(s[i]) && octal(s[i + 1]) {
                    let v = (u32::from(c - b'0') << 6)
                        | (u32::from(s[i] - b'0') << 3)
                        | u32::from(s[i + 1] - b'0');
                    out.push(v as u8);
                    i += 2;
                    continue;
                }
                out.push(match c {
                    b'a' => 7,
                    b'b' => 8,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 11,
                    b'f' => 12,
                    b'r' => b'\r',
                    other => other,
                });
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn scan_staged(
    engine: &Engine,
    root: &Path,
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    // Every setting that changes the patch's shape is pinned: prefixes (`diff.noprefix`,
    // `diff.mnemonicPrefix`), paths relative to the root (`diff.relative`), external and
    // textconv drivers, colour. Type changes (a symlink replaced by a file) are scanned too.
    // `--text`: a file `.gitattributes` marks `-diff` or `binary` (`*.env -diff` is common) is
    // diffed line by line all the same, or its lines would pass unscanned; a file that really is
    // binary has a NUL in its added lines and is skipped below, as a whole-file scan skips it.
    let diff = git(
        Some(root),
        &[
            "-c",
            "core.quotePath=false",
            "diff",
            "--cached",
            "--text",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-relative",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "--diff-filter=ACMRT",
        ],
    )?;
    for (path, lines) in parse_added_lines(&diff) {
        if suppress.ignores_path(&root.join(&path)) {
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
            // Binary, or UTF-16 text (a NUL in every other byte); the staged file says which.
            let blob = git(Some(root), &["cat-file", "blob", &format!(":{path}")])?;
            if let Some(order) = utf16_of(&blob) {
                let added = added_utf16_lines(&blob, order, &lines);
                for (hit, pragma) in scan_utf16(engine, &path, &blob, order, args) {
                    let on_added = added
                        .iter()
                        .any(|r| r.start <= hit.end_line && hit.line < r.end);
                    if on_added && !suppress.hides(&hit, pragma) {
                        sink.emit(hit)?;
                    }
                }
            }
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
                    fingerprint(f.rule_id, &f.fingerprint_bytes(&text)),
                ));
            }
            true
        });
        if found.is_empty() {
            continue;
        }
        // Byte offsets into the staged file need its line starts.
        let blob = git(Some(root), &["cat-file", "blob", &format!(":{path}")])?;
        let mut line_starts = vec![0usize];
        line_starts.extend(memchr::memchr_iter(b'\n', &blob).map(|i| i + 1));
        let mut cols = Columns::default();
        let mut locate_at = |off: usize| {
            let idx = starts.partition_point(|&(s, _)| s <= off).saturating_sub(1);
            let (ls, no) = starts[idx];
            let col = cols.count(&text, ls, off) + 1;
            let file_off = line_starts.get(no.saturating_sub(1)).copied().unwrap_or(0) + (off - ls);
            (no, col, file_off)
        };
        let mut lines = PragmaLines::default();
        for (span, rule, kind, family, confidence, preview, fp) in found {
            let (line, col, start) = locate_at(span.start);
            let (end_line, end_col, end) = locate_at(span.end.saturating_sub(1).max(span.start));
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
            let (_, pragma) = lines.at(&text, span.start);
            if !suppress.hides(&hit, pragma) {
                sink.emit(hit)?;
            }
        }
    }
    Ok(())
}

/// The decoded lines (1-based, as ranges) of a staged UTF-16 file that its added lines touch.
/// Git counts lines at every `0x0A` byte, which is half of a line break but also half of some
/// characters (`上` is `0A 4E` in little-endian): each added git line is mapped to its bytes and
/// those to the whole decoded lines they fall in.
fn added_utf16_lines(
    blob: &[u8],
    (order, bom): (Utf16, usize),
    lines: &[(usize, Vec<u8>)],
) -> Vec<std::ops::Range<usize>> {
    let mut starts = vec![0usize];
    starts.extend(memchr::memchr_iter(b'\n', blob).map(|i| i + 1));
    let breaks: Vec<usize> = code_units(blob, order, bom)
        .enumerate()
        .filter(|&(_, u)| u == u16::from(b'\n'))
        .map(|(i, _)| i)
        .collect();
    // The decoded line holding code unit `unit`.
    let line_at = |unit: usize| 1 + breaks.partition_point(|&b| b < unit);
    lines
        .iter()
        .filter_map(|&(no, _)| {
            let start = *starts.get(no.checked_sub(1)?)?;
            let end = starts.get(no).copied().unwrap_or(blob.len()).max(start + 1);
            // A git line may start on the second byte of a line break (little-endian): its
            // first whole unit is the next one. Its last byte is in the unit it ends in.
            let first = start.saturating_sub(bom).div_ceil(2);
            let last = (end - 1).saturating_sub(bom) / 2;
            Some(line_at(first)..line_at(last.max(first)) + 1)
        })
        .collect()
}

// === UTF-16 ===

/// The byte order of a UTF-16 file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Utf16 {
    Le,
    Be,
}

/// Whether `head` starts a UTF-16 file, and how long its byte order mark is. Windows tools
/// write UTF-16 (PowerShell 5's `>`, `.reg` exports, some resource files): text with a NUL in
/// nearly every other byte, which the binary check would skip whole. Told by the byte order
/// mark followed by a NUL in the next bytes (two bytes that look like a mark before plain
/// text must not turn that text into noise: it is scanned as bytes), or without a mark by
/// characters of the first bytes that are all below U+0100 and none NUL: one byte of every
/// pair NUL, the other never.
fn utf16_of(head: &[u8]) -> Option<(Utf16, usize)> {
    let nul_after_mark = || head[2..head.len().min(UTF16_SNIFF)].contains(&0);
    match head {
        // UTF-32 little-endian starts with FF FE 00 00.
        [0xFF, 0xFE, 0, 0, ..] => None,
        [0xFF, 0xFE, ..] if nul_after_mark() => Some((Utf16::Le, 2)),
        [0xFE, 0xFF, ..] if nul_after_mark() => Some((Utf16::Be, 2)),
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] => None,
        _ => {
            let n = head.len().min(UTF16_SNIFF) & !1;
            if n < 8 {
                return None;
            }
            let pairs = head[..n].chunks_exact(2);
            if pairs.clone().all(|p| p[0] != 0 && p[1] == 0) {
                Some((Utf16::Le, 0))
            } else if pairs.into_iter().all(|p| p[0] == 0 && p[1] != 0) {
                Some((Utf16::Be, 0))
            } else {
                None
            }
        }
    }
}

/// The code units of a UTF-16 file after its byte order mark (a last odd byte is dropped).
fn code_units(bytes: &[u8], order: Utf16, bom: usize) -> impl Iterator<Item = u16> + '_ {
    bytes[bom.min(bytes.len())..]
        .chunks_exact(2)
        .map(move |p| match order {
            Utf16::Le => u16::from_le_bytes([p[0], p[1]]),
            Utf16::Be => u16::from_be_bytes([p[0], p[1]]),
        })
}

/// A UTF-16 file decoded to UTF-8 (an unpaired surrogate becomes U+FFFD), with the way back
/// from an offset in the text to one in the file.
struct Utf16Text {
    text: String,
    bom: usize,
    /// UTF-16 code units before every [`Utf16Text::MARK`]th byte of `text`, and in all of it.
    marks: Vec<usize>,
}

impl Utf16Text {
    const MARK: usize = 4096;

    fn decode(bytes: &[u8], order: Utf16, bom: usize) -> Self {
        let text: String = char::decode_utf16(code_units(bytes, order, bom))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        let mut marks = Vec::with_capacity(text.len() / Self::MARK + 2);
        let mut total = 0;
        for chunk in text.as_bytes().chunks(Self::MARK) {
            marks.push(total);
            total += units_in(chunk);
        }
        marks.push(total);
        Self { text, bom, marks }
    }

    /// The file offset of byte `at` of the text, a char boundary.
    fn file_offset(&self, at: usize) -> usize {
        let k = at / Self::MARK;
        let units = self.marks[k] + units_in(&self.text.as_bytes()[k * Self::MARK..at]);
        self.bom + 2 * units
    }
}

/// The UTF-16 code units of UTF-8 `bytes`: one per char, two for a char beyond the Basic
/// Multilingual Plane (a four-byte sequence, whose lead byte is 0xF0 or above).
fn units_in(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .map(|&b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0))
        .sum()
}

/// Every wanted finding in a UTF-16 file with whether its line carries the pragma: found in
/// the decoded text and located there by line and column, and by byte offsets in the file.
/// Fingerprints are of the decoded value, as for the same secret in a UTF-8 file.
fn scan_utf16(
    engine: &Engine,
    shown: &str,
    bytes: &[u8],
    (order, bom): (Utf16, usize),
    args: &ScanArgs,
) -> Vec<(Hit, bool)> {
    let decoded = Utf16Text::decode(bytes, order, bom);
    let text = decoded.text.as_bytes();
    let mut hits = Vec::new();
    let mut cur = Cursor::new(1);
    let mut lines = PragmaLines::default();
    engine.scan_bytes(text, |f| {
        if wanted(args, f) {
            let mut hit = locate(shown, text, 0, f, &mut cur);
            hit.start = decoded.file_offset(f.span.start);
            hit.end = decoded.file_offset(f.span.end);
            let (_, pragma) = lines.at(text, f.span.start);
            hits.push((hit, pragma));
        }
        true
    });
    hits
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
                    let fp = fp.trim().to_ascii_lowercase();
                    // A truncated or mistyped fingerprint would suppress nothing, silently.
                    if fp.len() != 32 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!(
                            "{}:{}: a fingerprint is 32 hex digits, as `airlock scan --format json` prints it",
                            ignore_file.display(),
                            i + 1
                        );
                    }
                    fingerprints.insert(fp);
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
            let bad = || {
                anyhow::anyhow!(
                "invalid baseline {}: expected {{\"findings\": [{{\"path\", \"rule\", \"fingerprint\"}}, …]}} as `--write-baseline` writes it",
                b.display()
            )
            };
            // Version 1 is the only one written; a file without one predates the field.
            match doc.get("version") {
                None => {}
                Some(v) if v.as_u64() == Some(1) => {}
                Some(v) => bail!(
                    "baseline {} is version {v}; this airlock reads version 1",
                    b.display()
                ),
            }
            let items = doc
                .get("findings")
                .and_then(|f| f.as_array())
                .ok_or_else(bad)?;
            for item in items {
                let get = |k: &str| item.get(k).and_then(|v| v.as_str()).map(str::to_string);
                match (get("path"), get("rule"), get("fingerprint")) {
                    (Some(p), Some(r), Some(f)) => {
                        base.insert((p, r, f));
                    }
                    _ => return Err(bad()),
                }
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

    /// Whether a suppression hides `hit`; `pragma` is whether its line says `airlock:allow`.
    fn hides(&self, hit: &Hit, pragma: bool) -> bool {
        pragma
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

/// Writing findings out failed (stdout closed, as by `| head -1`, or its disk full): the scan
/// stops there, and it is no fault of the file being scanned.
#[derive(Debug)]
struct OutputError(std::io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing the findings to stdout: {}", self.0)
    }
}

impl std::error::Error for OutputError {}

/// Whether `e` is the output failing, not the path being scanned.
fn is_output_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<OutputError>())
}

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
            let written = match self.format {
                Format::Text => writeln!(
                    out,
                    "{}:{}:{}: {} [{}/{}] {}",
                    escape_controls(&hit.path),
                    hit.line,
                    hit.col,
                    hit.rule,
                    hit.kind.as_str(),
                    hit.family,
                    hit.preview
                ),
                Format::Json => writeln!(out, "{}", json_line(&hit)),
                Format::Sarif => Ok(()),
            };
            written.and_then(|()| out.flush()).map_err(OutputError)?;
        }
        self.files.insert(hit.path.clone());
        self.hits.push(hit);
        Ok(())
    }

    /// Writes the SARIF document or baseline; returns whether anything was found. `errors`
    /// counts the paths that could not be scanned: a SARIF run with any says it did not succeed.
    fn finish(&mut self, write_baseline: Option<&Path>, errors: usize) -> anyhow::Result<bool> {
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
            let doc = sarif(&self.hits, errors);
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

fn sarif(hits: &[Hit], errors: usize) -> serde_json::Value {
    let root = std::env::current_dir().unwrap_or_default();
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
                        "artifactLocation": sarif_location(&h.path, &root),
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
            // SARIF asks a base's URI to end in `/`.
            "originalUriBaseIds": {"%SRCROOT%": {"uri": format!("{}/", file_uri(&root).trim_end_matches('/'))}},
            "invocations": [invocation(errors)],
            "results": results
        }]
    })
}

/// Whether the run succeeded: a run that could not read some path must not pass for a clean
/// one in a tool that reads only the SARIF.
fn invocation(errors: usize) -> serde_json::Value {
    if errors == 0 {
        return serde_json::json!({"executionSuccessful": true});
    }
    serde_json::json!({
        "executionSuccessful": false,
        "toolExecutionNotifications": [{
            "level": "error",
            "message": {"text": format!("{errors} path(s) could not be scanned; see the tool's error output")}
        }]
    })
}

/// A SARIF artifact location for a reported path: relative to `%SRCROOT%` (the directory
/// scanned from, which code scanning takes as the repository root) when the path lies inside
/// it, else an absolute `file:` URI. A path out of the root (`../shared/.env`, `/etc/app.env`)
/// set against `%SRCROOT%` would name a file code scanning cannot place.
fn sarif_location(path: &str, root: &Path) -> serde_json::Value {
    if path == "-" {
        return serde_json::json!({"uri": "-", "uriBaseId": "%SRCROOT%"});
    }
    // `..` resolved by its text: the file may be gone, or reached through a link.
    let mut abs = PathBuf::new();
    for c in root.join(path).components() {
        match c {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::CurDir => {}
            c => abs.push(c),
        }
    }
    match abs.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => {
            let rel = rel.to_string_lossy().replace('\\', "/");
            serde_json::json!({"uri": sarif_uri(&rel), "uriBaseId": "%SRCROOT%"})
        }
        _ => serde_json::json!({"uri": file_uri(&abs)}),
    }
}

/// `file:///…` for an absolute path, percent-encoded as [`sarif_uri`] encodes.
fn file_uri(abs: &Path) -> String {
    let abs = abs.to_string_lossy().replace('\\', "/");
    let slash = if abs.starts_with('/') { "" } else { "/" };
    format!("file://{slash}{}", sarif_uri(&abs))
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
                warn(engine, &format!("watch error: {e}"));
                continue;
            }
        };
        if !(event.kind.is_create() || event.kind.is_modify()) {
            continue;
        }
        for path in event.paths {
            let in_git = path.components().any(|c| c.as_os_str() == ".git");
            if in_git || gitignored(&path) || !path.is_file() || suppress.ignores_path(&path) {
                continue;
            }
            report_new(engine, &path, args, suppress, sink, &mut seen);
        }
    }
    Ok(!sink.hits.is_empty())
}

/// Whether the ignore files of `path`'s directory and every directory above it (`.ignore`
/// before `.gitignore` in each, as a directory scan reads them, parents included) ignore
/// `path`; the deepest file that has a say decides. Read at each event, so a `.gitignore`
/// written while watching counts.
fn gitignored(path: &Path) -> bool {
    for d in path.ancestors().skip(1) {
        for name in [".ignore", ".gitignore"] {
            let file = d.join(name);
            if !file.is_file() {
                continue;
            }
            let (gi, _) = ignore::gitignore::Gitignore::new(&file);
            let Ok(inner) = path.strip_prefix(d) else {
                continue;
            };
            match gi.matched_path_or_any_parents(inner, false) {
                ignore::Match::Ignore(_) => return true,
                ignore::Match::Whitelist(_) => return false,
                ignore::Match::None => {}
            }
        }
    }
    false
}

fn report_new(
    engine: &Engine,
    path: &Path,
    args: &ScanArgs,
    suppress: &Suppressions,
    sink: &mut Sink,
    seen: &mut HashSet<(String, String, String)>,
) {
    let found = std::fs::File::open(path)
        .context("open")
        .and_then(|f| scan_reader(engine, &display_path(path), f, Some(path), args));
    let hits = match found {
        Ok(h) => h,
        Err(e) => {
            warn(engine, &format!("{}: {e:#}", path.display()));
            return;
        }
    };
    for (hit, pragma) in hits {
        let key = (hit.path.clone(), hit.rule.clone(), hit.fingerprint.clone());
        if suppress.hides(&hit, pragma) || !seen.insert(key) {
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
    fn utf16_offsets_map_back_to_the_file_across_marks() {
        let text: String = "a\u{e9}\u{4e2d}\u{1F600}\n".repeat(1500);
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let order = utf16_of(&bytes);
        assert_eq!(order, Some((Utf16::Le, 2)));
        let decoded = Utf16Text::decode(&bytes, Utf16::Le, 2);
        assert_eq!(decoded.text, text);
        assert!(decoded.marks.len() > 3, "{}", decoded.marks.len());
        for (at, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let want = 2 + 2 * text[..at].encode_utf16().count();
            assert_eq!(decoded.file_offset(at), want, "at {at}");
        }
    }

    #[test]
    fn utf16_is_told_by_its_mark_or_its_nul_bytes() {
        assert_eq!(utf16_of(b"\xFE\xFF\0a"), Some((Utf16::Be, 2)));
        assert_eq!(utf16_of(b"a\0b\0c\0d\0"), Some((Utf16::Le, 0)));
        assert_eq!(utf16_of(b"\0a\0b\0c\0d"), Some((Utf16::Be, 0)));
        // UTF-32, too short to tell, one NUL out of place, plain text.
        assert_eq!(utf16_of(b"\xFF\xFE\0\0a\0\0\0"), None);
        assert_eq!(utf16_of(b"a\0b\0"), None);
        assert_eq!(utf16_of(b"a\0b\0cxd\0"), None);
        assert_eq!(utf16_of(b"plain text"), None);
        // A mark before text with no NUL: plain text, scanned as bytes.
        assert_eq!(utf16_of(b"\xFF\xFE header"), None);
    }

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

    /// Counted on from the previous offset or afresh, columns and lines are what counting from
    /// the line's start gives, in order or not.
    #[test]
    fn columns_and_pragma_lines_match_a_count_from_the_line_start() {
        let text = "é x airlock:allow ü\nab\rcd é\n\nlast é line".as_bytes();
        let mut offsets: Vec<usize> = (0..=text.len()).collect();
        offsets.extend([30, 2, 9, 9, 0, text.len()]);
        let (mut cols, mut lines) = (Columns::default(), PragmaLines::default());
        for &o in &offsets {
            let line = line_of(text, o);
            let start = line.as_ptr() as usize - text.as_ptr() as usize;
            let line_start = memchr::memrchr(b'\n', &text[..o]).map_or(0, |i| i + 1);
            assert_eq!(
                cols.count(text, line_start, o),
                chars_in(&text[line_start..o]),
                "{o}"
            );
            let has = memchr::memmem::find(line, PRAGMA).is_some();
            assert_eq!(lines.at(text, o), (start..start + line.len(), has), "{o}");
        }
    }

    #[test]
    fn sarif_locations_outside_the_root_are_absolute_file_uris() {
        let root = Path::new("/srv/projects/repo");
        let loc = |p| sarif_location(p, root);
        assert_eq!(
            loc("src/a b.rs"),
            serde_json::json!({"uri": "src/a%20b.rs", "uriBaseId": "%SRCROOT%"})
        );
        assert_eq!(
            loc("sub/../src/main.rs"),
            serde_json::json!({"uri": "src/main.rs", "uriBaseId": "%SRCROOT%"})
        );
        assert_eq!(
            loc("../shared/.env"),
            serde_json::json!({"uri": "file:///srv/projects/shared/.env"})
        );
        assert_eq!(
            loc("/etc/app #1.env"),
            serde_json::json!({"uri": "file:///etc/app%20%231.env"})
        );
        // A sibling whose name starts like the root's is outside it.
        assert_eq!(
            loc("../repo2/x.env"),
            serde_json::json!({"uri": "file:///srv/projects/repo2/x.env"})
        );
        assert_eq!(
            loc("-"),
            serde_json::json!({"uri": "-", "uriBaseId": "%SRCROOT%"})
        );
    }

    #[test]
    fn fingerprints_do_not_contain_the_value() {
        let fp = fingerprint("rule", b"value-123");
        assert_eq!(fp.len(), 32);
        assert!(!fp.contains("value"));
        assert_ne!(fp, fingerprint("rule", b"value-124"));
    }

    #[test]
    fn added_lines_that_look_like_headers_are_content() {
        let diff = b"diff --git a/notes.md b/notes.md\nnew file mode 100644\n--- /dev/null\n+++ b/notes.md\n@@ -0,0 +1,3 @@\n+++ b/docs/x\n+--- a/y\n+@@ -1 +1 @@\n";
        let files = parse_added_lines(diff);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "notes.md");
        let lines: Vec<(usize, &[u8])> =
            files[0].1.iter().map(|(n, t)| (*n, t.as_slice())).collect();
        assert_eq!(
            lines,
            vec![
                (1, &b"++ b/docs/x"[..]),
                (2, &b"--- a/y"[..]),
                (3, &b"@@ -1 +1 @@"[..])
            ]
        );
    }

    #[test]
    fn diff_paths_lose_their_quoting_and_tab() {
        assert_eq!(diff_path(b"b/my file.env\t"), Some("my file.env".into()));
        assert_eq!(diff_path(b"\"b/q\\\"t.env\""), Some("q\"t.env".into()));
        assert_eq!(
            diff_path(b"\"b/tab\\there\\303\\251\""),
            Some("tab\there\u{e9}".into())
        );
        assert_eq!(
            diff_path(b"\"b/back\\\\slash\""),
            Some("back\\slash".into())
        );
        assert_eq!(diff_path(b"\"b/a\\tb\""), Some("a\tb".into()));
        assert_eq!(diff_path(b"/dev/null"), None);
        let diff = b"--- a/x\n+++ \"b/q\\\"t.env\"\n@@ -1,2 +1 @@\n-one\n-two\n+three\n\\ No newline at end of file\n";
        let files = parse_added_lines(diff);
        assert_eq!(files[0].0, "q\"t.env");
        assert_eq!(files[0].1, vec![(1, b"three".to_vec())]);
    }

    #[test]
    fn the_pragma_is_found_anywhere_on_a_long_line_and_only_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let block = 64 << 10;
        // (text before the value on its line, after it, pragma expected)
        let pad = |n: usize| "x".repeat(n);
        let cases = [
            (format!("# airlock:allow {}", pad(3 * block)), pad(10), true),
            (pad(10), format!("{} airlock:allow", pad(3 * block)), true),
            // Across a block boundary, counted back from the value.
            (
                format!("airlock:allow{}", pad(block - 6)),
                String::new(),
                true,
            ),
            (pad(3 * block), pad(3 * block), false),
        ];
        for (i, (before, after, want)) in cases.iter().enumerate() {
            for previous in ["", "airlock:allow\n", "airlock:al\n"] {
                let text = format!("{previous}{before}VALUE{after}\nnext airlock:allow\n");
                std::fs::write(&path, &text).expect("write");
                let offset = text.find("VALUE").expect("value");
                assert_eq!(
                    pragma_in_file(&path, offset).expect("read"),
                    *want,
                    "case {i} after {previous:?}"
                );
            }
        }
    }

    #[test]
    fn watch_ignores_what_ignore_files_above_and_below_say() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path();
        let write = |rel: &str, text: &str| {
            let p = repo.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write(".gitignore", "*.local.env\n");
        write("src/.ignore", "scratch/\n");
        write("src/deep/.gitignore", "!keep.local.env\n");
        assert!(
            gitignored(&repo.join("src/x.local.env")),
            "a parent's .gitignore"
        );
        assert!(gitignored(&repo.join("src/scratch/a.env")), ".ignore");
        assert!(
            !gitignored(&repo.join("src/deep/keep.local.env")),
            "a deeper whitelist"
        );
        assert!(!gitignored(&repo.join("src/app.env")));
    }

    #[test]
    fn a_chunk_starting_mid_line_counts_columns_from_the_line() {
        let mut c = Cursor::within_line(7, 100);
        assert_eq!(c.at(b"abc\nde", 2), (7, 103));
        assert_eq!(c.at(b"abc\nde", 5), (8, 2));
    }
}
