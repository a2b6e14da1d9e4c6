//! Secrets in what the functions wrote: every function process's output kept in full on
//! disk, and the scan of it for secret values when a run ends.
//!
//! [`crate::runtime`] writes each process's stdout and stderr, and the error documents it
//! posts to the Runtime API, to a file of their own in an [`OutputArchive`] per function,
//! every process generation included (a process that crashed or timed out and was
//! started again keeps its files). The in-memory copy of a
//! function's output ([`crate::runtime::FunctionRuntime::logs`]) is bounded and drops its
//! oldest lines; the files are not, up to [`MAX_OUTPUT_BYTES`] per function, past which
//! the scan reports itself incomplete rather than silently missing a line. The scan reads
//! the files in chunks, so its memory does not grow with them, and checks every needle in
//! one pass over each chunk.
//!
//! A [`LeakReport`] names the function, process, stream and what leaked (the secret's
//! name, "an access token of …"), never the value.

use std::{
    collections::BTreeSet,
    fmt,
    io::Read,
    path::PathBuf,
    sync::{
        Mutex as StdMutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// Values read from Secrets Manager shorter than this are not looked for: documents
/// carry short non-secret strings (flags, ids like `"1"`) that would match by accident.
pub const MIN_SECRET_LEN: usize = 8;

/// The shortest value [`crate::stack::LocalStack::watch_for_leaks`] accepts (the fake
/// provider's four-byte token prefix is watched on purpose).
pub const MIN_WATCHED_LEN: usize = 4;

/// The most output kept on disk per function (every process and stream together).
pub const MAX_OUTPUT_BYTES: u64 = 1 << 30;

/// Bytes read from an output file at a time by the scan.
const SCAN_CHUNK: usize = 64 * 1024;

/// A value the scan looks for, and what it is: a finding names that, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Needle {
    what: String,
    bytes: Vec<u8>,
}

impl fmt::Debug for Needle {
    /// Names the needle, not its value: a failing assertion may print this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Needle")
            .field("what", &self.what)
            .field("bytes", &format_args!("[{} bytes]", self.bytes.len()))
            .finish()
    }
}

impl Needle {
    /// `value` exactly as given.
    pub fn new(what: impl Into<String>, value: impl Into<Vec<u8>>) -> Needle {
        Needle {
            what: what.into(),
            bytes: value.into(),
        }
    }

    /// `value` as written, percent-encoded (as in a URL's query) and escaped as the
    /// inside of a JSON string: a log line that carries a URL or a JSON document holds
    /// the value in one of those forms. Each distinct form once.
    pub fn with_encodings(what: &str, value: &str) -> Vec<Needle> {
        let percent: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let json = serde_json::to_string(value).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|text| text.strip_suffix('"'))
            .unwrap_or(value);
        let mut needles = vec![Needle::new(what, value)];
        for (form, text) in [
            ("percent-encoded", percent.as_str()),
            ("JSON-escaped", json),
        ] {
            if text != value && needles.iter().all(|n| n.bytes != text.as_bytes()) {
                needles.push(Needle::new(format!("{what} ({form})"), text));
            }
        }
        needles
    }

    /// What the value is.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// Why a value cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "the watched value of {what} has {len} bytes; one of fewer than {MIN_WATCHED_LEN} \
         would match by accident"
    )]
    TooShort { what: String, len: usize },
}

/// Values a test registered with [`crate::stack::LocalStack::watch_for_leaks`].
#[derive(Debug, Default)]
pub(crate) struct Watched(StdMutex<Vec<Needle>>);

impl Watched {
    pub(crate) fn add(&self, what: String, value: &str) -> Result<(), WatchError> {
        if value.len() < MIN_WATCHED_LEN {
            return Err(WatchError::TooShort {
                what,
                len: value.len(),
            });
        }
        lock(&self.0).extend(Needle::with_encodings(&what, value));
        Ok(())
    }

    pub(crate) fn needles(&self) -> Vec<Needle> {
        lock(&self.0).clone()
    }
}

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Needles indexed by their first two bytes, so one pass over the output checks them all.
#[derive(Debug)]
pub(crate) struct NeedleSet {
    needles: Vec<Needle>,
    /// `u16::from_le_bytes([first, second])` → indexes into `needles`.
    by_prefix: Vec<Vec<usize>>,
    longest: usize,
}

impl NeedleSet {
    /// The set of `needles`, each distinct value once (the first one's name kept).
    /// Values shorter than two bytes are dropped; callers enforce longer minimums.
    pub(crate) fn new(needles: Vec<Needle>) -> NeedleSet {
        let mut seen = BTreeSet::new();
        let needles: Vec<Needle> = needles
            .into_iter()
            .filter(|needle| needle.bytes.len() >= 2 && seen.insert(needle.bytes.clone()))
            .collect();
        let mut by_prefix = vec![Vec::new(); 1 << 16];
        for (index, needle) in needles.iter().enumerate() {
            by_prefix[usize::from(u16::from_le_bytes([needle.bytes[0], needle.bytes[1]]))]
                .push(index);
        }
        let longest = needles.iter().map(|n| n.bytes.len()).max().unwrap_or(0);
        NeedleSet {
            needles,
            by_prefix,
            longest,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.needles.len()
    }

    /// Adds the index of every needle `haystack` contains to `found`.
    fn find_in(&self, haystack: &[u8], found: &mut BTreeSet<usize>) {
        for (at, pair) in haystack.windows(2).enumerate() {
            let candidates = &self.by_prefix[usize::from(u16::from_le_bytes([pair[0], pair[1]]))];
            for &index in candidates {
                if !found.contains(&index) && haystack[at..].starts_with(&self.needles[index].bytes)
                {
                    found.insert(index);
                }
            }
        }
    }

    /// The needles `reader` contains, read in chunks that overlap by one byte less than
    /// the longest needle, so a value split across two reads is still found.
    pub(crate) fn scan(&self, mut reader: impl Read) -> std::io::Result<BTreeSet<usize>> {
        let overlap = self.longest.saturating_sub(1);
        let mut found = BTreeSet::new();
        let mut window: Vec<u8> = Vec::with_capacity(SCAN_CHUNK + overlap);
        let mut chunk = vec![0u8; SCAN_CHUNK];
        loop {
            let read = match reader.read(&mut chunk) {
                Ok(0) => return Ok(found),
                Ok(read) => read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            window.extend_from_slice(&chunk[..read]);
            self.find_in(&window, &mut found);
            let keep_from = window.len().saturating_sub(overlap);
            window.drain(..keep_from);
        }
    }
}

/// What a leak scan found.
#[derive(Debug, Default, Clone)]
pub struct LeakReport {
    /// One line per function, process, stream and value: "WebhookIngressFunction
    /// (process 1, stderr) wrote a value of secret junction/webhooks/github".
    pub leaks: Vec<String>,
    /// Why the scan did not see everything (output that could not be kept or read,
    /// secrets that could not be listed): a report with any is not clean.
    pub incomplete: Vec<String>,
    /// Distinct values looked for (encodings included).
    pub needles: usize,
    /// Output files scanned (one per process and stream).
    pub files: usize,
    /// Bytes of output scanned.
    pub bytes: u64,
}

impl LeakReport {
    /// Nothing leaked and the scan saw everything.
    pub fn is_clean(&self) -> bool {
        self.leaks.is_empty() && self.incomplete.is_empty()
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} value(s) looked for in {} file(s), {} bytes of function output",
            self.needles, self.files, self.bytes
        )?;
        for leak in &self.leaks {
            writeln!(f, "leak: {leak}")?;
        }
        for gap in &self.incomplete {
            writeln!(f, "incomplete: {gap}")?;
        }
        Ok(())
    }
}

/// One output stream of one process, on disk.
#[derive(Debug)]
struct ArchivedStream {
    generation: u64,
    stream: &'static str,
    path: PathBuf,
}

/// Everything one function's processes wrote, one file per process and stream, in a
/// directory of the system's temporary directory that is removed with the archive.
#[derive(Debug)]
pub(crate) struct OutputArchive {
    /// `None` when the directory could not be created (recorded as a problem).
    dir: Option<PathBuf>,
    streams: StdMutex<Vec<ArchivedStream>>,
    /// Bytes kept so far, against [`MAX_OUTPUT_BYTES`].
    bytes: AtomicU64,
    /// What keeps the archive from holding everything: the scan reports these.
    problems: StdMutex<Vec<String>>,
}

impl OutputArchive {
    /// A new archive for the function `logical_id`.
    pub(crate) fn new(logical_id: &str) -> OutputArchive {
        let dir = std::env::temp_dir().join(format!(
            "junction-output-{logical_id}-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let mut problems = Vec::new();
        let dir = match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(err) => {
                problems.push(format!(
                    "{logical_id}: its output could not be kept in {}: {err}",
                    dir.display()
                ));
                None
            }
        };
        OutputArchive {
            dir,
            streams: StdMutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
            problems: StdMutex::new(problems),
        }
    }

    /// A new file for `stream` (`stdout`, `stderr`) of process `generation`; `None`
    /// (and a problem recorded) when it cannot be created.
    pub(crate) async fn create(
        &self,
        generation: u64,
        stream: &'static str,
    ) -> Option<tokio::fs::File> {
        let dir = self.dir.as_ref()?;
        let path = dir.join(format!("process-{generation}.{stream}"));
        match tokio::fs::File::create(&path).await {
            Ok(file) => {
                lock(&self.streams).push(ArchivedStream {
                    generation,
                    stream,
                    path,
                });
                Some(file)
            }
            Err(err) => {
                self.problem(format!(
                    "the {stream} of process {generation} could not be kept in {}: {err}",
                    path.display()
                ));
                None
            }
        }
    }

    /// Appends `bytes` and a newline to the `stream` file of process `generation`,
    /// creating it on first use: the error documents a process posts to the Runtime API
    /// carry messages a deployment shows, so they are scanned like its output.
    pub(crate) async fn append(&self, generation: u64, stream: &'static str, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        let Some(dir) = &self.dir else {
            return;
        };
        let path = dir.join(format!("process-{generation}.{stream}"));
        {
            let mut streams = lock(&self.streams);
            if !streams.iter().any(|archived| archived.path == path) {
                streams.push(ArchivedStream {
                    generation,
                    stream,
                    path: path.clone(),
                });
            }
        }
        let written = if self.reserve(bytes.len().saturating_add(1)) {
            let write = async {
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await?;
                file.write_all(bytes).await?;
                file.write_all(b"\n").await?;
                file.flush().await
            };
            write.await.map_err(|err| err.to_string())
        } else {
            Err(format!(
                "the function wrote more than {MAX_OUTPUT_BYTES} bytes"
            ))
        };
        if let Err(why) = written {
            self.problem(format!(
                "the {stream} of process {generation} were not kept in full: {why}"
            ));
        }
    }

    /// Counts `bytes` more against [`MAX_OUTPUT_BYTES`]; false once past it.
    pub(crate) fn reserve(&self, bytes: usize) -> bool {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.bytes
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes)
            <= MAX_OUTPUT_BYTES
    }

    /// Records why the archive does not hold everything.
    pub(crate) fn problem(&self, text: String) {
        lock(&self.problems).push(text);
    }

    /// Scans every file of the archive for `needles` into `report` (blocking reads).
    pub(crate) fn scan(&self, function: &str, needles: &NeedleSet, report: &mut LeakReport) {
        report.incomplete.extend(
            lock(&self.problems)
                .iter()
                .map(|problem| format!("{function}: {problem}")),
        );
        let streams: Vec<(u64, &'static str, PathBuf)> = lock(&self.streams)
            .iter()
            .map(|s| (s.generation, s.stream, s.path.clone()))
            .collect();
        for (generation, stream, path) in streams {
            let scanned = std::fs::File::open(&path).and_then(|file| {
                report.bytes += file.metadata()?.len();
                needles.scan(std::io::BufReader::new(file))
            });
            report.files += 1;
            match scanned {
                Ok(found) => report.leaks.extend(found.into_iter().map(|index| {
                    format!(
                        "{function} (process {generation}, {stream}) wrote {}",
                        needles.needles[index].what
                    )
                })),
                Err(err) => report.incomplete.push(format!(
                    "{function}: the {stream} of process {generation} could not be read from \
                     {}: {err}",
                    path.display()
                )),
            }
        }
    }
}

impl Drop for OutputArchive {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[(&str, &str)]) -> NeedleSet {
        NeedleSet::new(
            values
                .iter()
                .map(|(what, value)| Needle::new(*what, *value))
                .collect(),
        )
    }

    fn found(set: &NeedleSet, text: &[u8]) -> Vec<String> {
        set.scan(text)
            .expect("read from memory")
            .into_iter()
            .map(|index| set.needles[index].what.clone())
            .collect()
    }

    #[test]
    fn every_needle_is_found_anywhere_and_only_then() {
        let needles = set(&[
            ("a", "secret-alpha-1"),
            ("b", "token-beta-22"),
            ("c", "never-written"),
        ]);
        let text = b"start token-beta-22\nmiddle\x00\xff secret-alpha-1";
        assert_eq!(found(&needles, text), ["a", "b"]);
        assert!(
            found(&needles, b"secret-alpha-").is_empty(),
            "a prefix is no match"
        );
    }

    #[test]
    fn a_value_across_two_reads_is_found() {
        let value = "a-value-across-the-chunk-boundary";
        let needles = set(&[("split", value)]);
        let mut text = vec![b'x'; SCAN_CHUNK - 10];
        text.extend_from_slice(value.as_bytes());
        text.extend(vec![b'y'; SCAN_CHUNK]);
        assert_eq!(found(&needles, &text), ["split"]);
        // The same text with the value cut short finds nothing.
        let mut cut = vec![b'x'; SCAN_CHUNK - 10];
        cut.extend_from_slice(&value.as_bytes()[..value.len() - 1]);
        cut.extend(vec![b'z'; SCAN_CHUNK]);
        assert!(found(&needles, &cut).is_empty());
    }

    #[test]
    fn encodings_of_a_value_are_needles_too() {
        let forms = Needle::with_encodings("a token", "ab+/c=\"d\\");
        let texts: Vec<&[u8]> = forms.iter().map(|n| n.bytes.as_slice()).collect();
        assert_eq!(
            texts,
            [
                b"ab+/c=\"d\\".as_slice(),
                b"ab%2B%2Fc%3D%22d%5C",
                b"ab+/c=\\\"d\\\\"
            ]
        );
        assert_eq!(forms[1].what(), "a token (percent-encoded)");
        assert_eq!(
            Needle::with_encodings("plain", "abcdefgh").len(),
            1,
            "a value no encoding changes is looked for once"
        );
        assert!(
            !format!("{:?}", forms[0]).contains("ab+"),
            "Debug hides the value"
        );
    }

    #[test]
    fn short_watched_values_are_refused() {
        let watched = Watched::default();
        assert!(watched.add("a marker".into(), "fkt_").is_ok());
        assert!(matches!(
            watched.add("a flag".into(), "1"),
            Err(WatchError::TooShort { len: 1, .. })
        ));
        assert_eq!(watched.needles().len(), 1);
    }

    #[test]
    fn the_archive_scan_names_process_and_stream_and_counts_what_it_read() {
        let archive = OutputArchive::new("ArchiveTest");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            use tokio::io::AsyncWriteExt as _;
            for (generation, stream, text) in [
                (1, "stdout", "clean line\n"),
                (2, "stderr", "oops: planted-secret-value\n"),
            ] {
                let mut file = archive.create(generation, stream).await.expect("file");
                file.write_all(text.as_bytes()).await.expect("written");
                file.flush().await.expect("flushed");
            }
            for document in [
                r#"{"errorMessage":"bad"}"#,
                r#"{"errorMessage":"planted-secret-value"}"#,
            ] {
                archive.append(2, "errors", document.as_bytes()).await;
            }
        });
        let mut report = LeakReport::default();
        archive.scan(
            "ArchiveTest",
            &set(&[("the planted value", "planted-secret-value")]),
            &mut report,
        );
        assert_eq!(
            report.leaks,
            [
                "ArchiveTest (process 2, stderr) wrote the planted value",
                "ArchiveTest (process 2, errors) wrote the planted value",
            ]
        );
        assert_eq!((report.files, report.bytes), (3, 38 + 23 + 40));
        assert!(!report.is_clean());
        let dir = archive.dir.clone().expect("a directory");
        drop(archive);
        assert!(!dir.exists(), "the archive's files are removed with it");
    }

    #[test]
    fn output_past_the_cap_is_refused() {
        let archive = OutputArchive::new("CapTest");
        assert!(archive.reserve(usize::try_from(MAX_OUTPUT_BYTES).expect("fits")));
        assert!(!archive.reserve(1));
    }
}
