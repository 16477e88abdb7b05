//! Token counting in a helper process, so the server's memory stays small.
//!
//! A BPE tokenizer's tables take about 45 MB once loaded, and an allocator does not give most of
//! that back when they are dropped. The server only needs them to estimate a stream cut short, so
//! `airlock serve` counts in a child (`airlock __count-tokens`) started on first use and closed
//! after [`IDLE`] without work; its memory goes back to the system with it. If the child cannot
//! be started or dies, counting falls back to this process (logged once), so an estimate is never
//! skipped.
//!
//! Wire format on the child's stdin: `[u8 tokenizer][u32 LE length][text]`; on its stdout: the
//! count as `u64 LE`. The text never leaves the machine, and the child writes nothing else.

use super::estimate::Tokenizer;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The child exits this long after its last count.
pub const IDLE: Duration = Duration::from_secs(30);

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__count-tokens";

static EXE: OnceLock<PathBuf> = OnceLock::new();
static CHILD: Mutex<Option<Helper>> = Mutex::new(None);
static FELL_BACK: AtomicBool = AtomicBool::new(false);

struct Helper {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    last_used: Instant,
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing stdin ends the child's loop; reap it so no zombie is left.
        let _ = self.stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Work that needs token counts, run off the request path.
pub type Job = Box<dyn FnOnce() + Send>;

static QUEUE: OnceLock<Option<std::sync::mpsc::SyncSender<Job>>> = OnceLock::new();

/// Runs `job` on the one estimator thread (started on first use), in order. Gives the job back
/// when the queue is full or the thread cannot start, so the caller can run it itself.
pub fn in_background(job: Job) -> Result<(), Job> {
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(4096);
        std::thread::Builder::new()
            .name("airlock-estimate".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| tracing::warn!("no estimator thread: {e}"))
            .ok()
            .map(|_| tx)
    });
    match queue {
        Some(tx) => tx.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(j)
            | std::sync::mpsc::TrySendError::Disconnected(j) => j,
        }),
        None => Err(job),
    }
}

/// Counts in a child process running `exe __count-tokens` from now on (called by `serve`).
pub fn use_helper_process(exe: PathBuf) {
    let _ = EXE.set(exe);
}

/// Whether a helper process is running now (for tests and `status`).
pub fn helper_running() -> bool {
    CHILD.lock().is_ok_and(|c| c.is_some())
}

/// Counts `text` in the helper process if one is configured; `None` means "count here".
pub(super) fn count_in_helper(tokenizer: Tokenizer, text: &str) -> Option<u64> {
    let exe = EXE.get()?;
    let mut guard = CHILD.lock().unwrap_or_else(|p| p.into_inner());
    for attempt in 0..2 {
        if guard.is_none() {
            match start(exe) {
                Ok(h) => {
                    *guard = Some(h);
                    spawn_reaper();
                }
                Err(e) => {
                    fall_back(&format!("cannot start the token counter: {e}"));
                    return None;
                }
            }
        }
        let helper = guard.as_mut()?;
        match ask(helper, tokenizer, text) {
            Ok(n) => {
                helper.last_used = Instant::now();
                return Some(n);
            }
            Err(e) => {
                // A dead child: start a new one once, then count here.
                *guard = None;
                if attempt == 1 {
                    fall_back(&format!("the token counter failed: {e}"));
                }
            }
        }
    }
    None
}

fn fall_back(why: &str) {
    if !FELL_BACK.swap(true, Ordering::Relaxed) {
        tracing::warn!("{why}; counting tokens in the server process instead");
    }
}

fn start(exe: &PathBuf) -> io::Result<Helper> {
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    Ok(Helper {
        child,
        stdin: BufWriter::new(stdin),
        stdout: BufReader::new(stdout),
        last_used: Instant::now(),
    })
}

fn ask(h: &mut Helper, tokenizer: Tokenizer, text: &str) -> io::Result<u64> {
    let len = u32::try_from(text.len()).map_err(|_| io::Error::other("text too long"))?;
    h.stdin.write_all(&[code(tokenizer)])?;
    h.stdin.write_all(&len.to_le_bytes())?;
    h.stdin.write_all(text.as_bytes())?;
    h.stdin.flush()?;
    let mut n = [0u8; 8];
    h.stdout.read_exact(&mut n)?;
    Ok(u64::from_le_bytes(n))
}

/// Closes the child once it has been idle for [`IDLE`]; ends with it.
fn spawn_reaper() {
    let spawned = std::thread::Builder::new()
        .name("airlock-tokens".into())
        .spawn(|| loop {
            std::thread::sleep(IDLE / 4);
            let mut guard = CHILD.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                None => return,
                Some(h) if h.last_used.elapsed() >= IDLE => {
                    *guard = None;
                    return;
                }
                Some(_) => {}
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("no reaper for the token counter: {e}");
    }
}

fn code(t: Tokenizer) -> u8 {
    match t {
        Tokenizer::O200kBase => 0,
        Tokenizer::Cl100kBase => 1,
    }
}

/// The child's side: answers counts until stdin closes.
pub fn serve_counts(input: impl Read, output: impl Write) -> io::Result<()> {
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    let mut text = Vec::new();
    loop {
        let mut head = [0u8; 5];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let tokenizer = match head[0] {
            0 => Tokenizer::O200kBase,
            1 => Tokenizer::Cl100kBase,
            other => return Err(io::Error::other(format!("unknown tokenizer {other}"))),
        };
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        text.resize(len, 0);
        input.read_exact(&mut text)?;
        let s = std::str::from_utf8(&text).map_err(io::Error::other)?;
        let n = tokenizer.count_here(s);
        output.write_all(&n.to_le_bytes())?;
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_protocol_answers_each_request_with_the_real_count() {
        let texts = [
            "hello world, this is a test",
            "",
            "naïve café ☕ 東京",
            "fn main() {}",
        ];
        let mut input = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            input.push((i % 2) as u8);
            input.extend_from_slice(&(t.len() as u32).to_le_bytes());
            input.extend_from_slice(t.as_bytes());
        }
        let mut output = Vec::new();
        serve_counts(&input[..], &mut output).expect("serve");
        assert_eq!(output.len(), 8 * texts.len());
        for (i, t) in texts.iter().enumerate() {
            let got = u64::from_le_bytes(output[i * 8..i * 8 + 8].try_into().expect("8"));
            let tk = if i % 2 == 0 {
                Tokenizer::O200kBase
            } else {
                Tokenizer::Cl100kBase
            };
            assert_eq!(got, tk.count_here(t), "text {i}");
        }
        assert_eq!(
            u64::from_le_bytes(output[..8].try_into().expect("8")),
            7,
            "o200k splits the first text into 7 tokens"
        );
    }

    #[test]
    fn a_bad_request_ends_the_child_with_an_error() {
        let mut out = Vec::new();
        assert!(serve_counts(&[9u8, 0, 0, 0, 0][..], &mut out).is_err());
        let mut out = Vec::new();
        // Invalid UTF-8 text.
        assert!(serve_counts(&[0u8, 2, 0, 0, 0, 0xff, 0xfe][..], &mut out).is_err());
    }
}
