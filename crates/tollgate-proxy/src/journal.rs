//! The usage journal: every usage event is appended here, one JSON line, before the
//! response it bills releases its last byte — so a process that dies (`kill -9`, a panic,
//! the OOM killer) loses no event of a response a client received.
//!
//! Layout, in `<data_dir>/usage-journal/`: each process owns the segments named
//! `<owner>.<seq>.jsonl` and holds an exclusive `flock` on `<owner>.lock` for its lifetime
//! (the kernel releases it when the process dies, however it dies). A segment is
//! truncated when every event in it is committed to the database, or sealed (a new one
//! opened) when it grows past [`SEGMENT_BYTES`] and deleted once all its events are
//! committed. At start, [`recover_orphans`] takes the segments of every owner whose lock
//! it can acquire — owners that are gone — never those of a live process.
//!
//! Invariants: an append is one `write(2)` into the page cache under a mutex (no fsync:
//! process death keeps it, power loss may not); a line torn by a crash mid-write is
//! skipped at replay and the rest kept; an append that fails (disk full) is logged and the
//! event goes on in memory, as before the journal.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tollgate_core::usage::UsageEvent;

/// The size past which the current segment is sealed and a new one opened.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The directory, under the data directory, that holds the journal.
pub const DIR_NAME: &str = "usage-journal";

/// One process's journal.
pub struct Journal {
    dir: PathBuf,
    owner: String,
    state: Mutex<State>,
    /// Held (locked) for the process's lifetime: tells other processes this owner is alive.
    _lock: File,
}

struct State {
    file: File,
    seq: u64,
    current: Segment,
    /// Sealed segments still holding events not yet committed.
    sealed: BTreeMap<u64, Segment>,
    /// The last write failed part-way: the next line starts on a fresh line.
    torn: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Segment {
    bytes: u64,
    appended: u64,
    committed: u64,
}

fn segment_path(dir: &Path, owner: &str, seq: u64) -> PathBuf {
    dir.join(format!("{owner}.{seq:08}.jsonl"))
}

fn lock_path(dir: &Path, owner: &str) -> PathBuf {
    dir.join(format!("{owner}.lock"))
}

fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Takes the exclusive lock on `file` without waiting: `Ok(false)` when another process
/// holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Journal {
    /// Creates this process's journal in `dir` (created if missing), under a new owner name.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let owner = format!("{}-{}", std::process::id(), tollgate_core::ids::new_id("j"));
        // Locked under a name a replayer ignores, then renamed: never seen unlocked.
        let locking = dir.join(format!(".{owner}.locking"));
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&locking)?;
        if !try_lock(&lock)? {
            return Err(io::Error::other("the journal's new lock file is locked by another process"));
        }
        std::fs::rename(&locking, lock_path(dir, &owner))?;
        let file = open_segment(&segment_path(dir, &owner, 0))?;
        let state = State { file, seq: 0, current: Segment::default(), sealed: BTreeMap::new(), torn: false };
        Ok(Self { dir: dir.to_owned(), owner, state: Mutex::new(state), _lock: lock })
    }

    /// This process's owner name (the prefix of its segment files).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock still holds a valid file and valid counts.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one event; returns the segment it went to (for [`Journal::committed`]).
    pub fn append(&self, event: &UsageEvent) -> io::Result<u64> {
        let mut line = Vec::with_capacity(768);
        line.push(b'\n');
        serde_json::to_writer(&mut line, event)?;
        line.push(b'\n');
        let mut s = self.state();
        let bytes = if s.torn { &line[..] } else { &line[1..] };
        match s.file.write_all(bytes) {
            Ok(()) => {
                s.torn = false;
                s.current.bytes += bytes.len() as u64;
                s.current.appended += 1;
                Ok(s.seq)
            }
            Err(e) => {
                s.torn = true;
                Err(e)
            }
        }
    }

    /// Records that the events appended to `segments` (one entry per event) are in the
    /// database (or in the spill file); truncates, seals and deletes segments accordingly.
    pub fn committed(&self, segments: &[u64]) {
        let mut s = self.state();
        let s = &mut *s;
        for &seg in segments {
            if seg == s.seq {
                s.current.committed += 1;
            } else if let Some(sealed) = s.sealed.get_mut(&seg) {
                sealed.committed += 1;
            }
        }
        let done: Vec<u64> = s.sealed.iter().filter(|(_, g)| g.committed >= g.appended).map(|(k, _)| *k).collect();
        for seq in done {
            s.sealed.remove(&seq);
            if let Err(e) = std::fs::remove_file(segment_path(&self.dir, &self.owner, seq)) {
                tracing::warn!(error = %e, "could not delete a committed usage journal segment");
            }
        }
        if s.current.bytes == 0 {
            return;
        }
        if s.current.committed >= s.current.appended {
            match s.file.set_len(0) {
                Ok(()) => s.current = Segment::default(),
                Err(e) => tracing::warn!(error = %e, "could not truncate the usage journal"),
            }
        } else if s.current.bytes >= SEGMENT_BYTES {
            let next = s.seq + 1;
            match open_segment(&segment_path(&self.dir, &self.owner, next)) {
                Ok(file) => {
                    s.file = file;
                    let old = std::mem::take(&mut s.current);
                    s.sealed.insert(s.seq, old);
                    s.seq = next;
                    s.torn = false;
                }
                Err(e) => tracing::warn!(error = %e, "could not open a new usage journal segment"),
            }
        }
    }

    /// Bytes of this process's segments on disk.
    pub fn bytes(&self) -> u64 {
        let s = self.state();
        s.current.bytes + s.sealed.values().map(|g| g.bytes).sum::<u64>()
    }

    /// At a clean stop: removes this process's files when every event is committed
    /// (otherwise they stay, for the next start to replay).
    pub fn close(&self) {
        let s = self.state();
        if s.current.committed < s.current.appended || !s.sealed.is_empty() {
            tracing::warn!(events = s.current.appended - s.current.committed, "usage journal kept for the next start");
            return;
        }
        let _ = std::fs::remove_file(segment_path(&self.dir, &self.owner, s.seq));
        let _ = std::fs::remove_file(lock_path(&self.dir, &self.owner));
    }
}

/// The journal of a process that is gone, locked by the caller until [`Orphan::remove`].
pub struct Orphan {
    pub owner: String,
    /// Its events, in the order written; torn lines skipped.
    pub events: Vec<UsageEvent>,
    /// Lines that could not be read (a crash mid-write).
    pub torn_lines: usize,
    segments: Vec<PathBuf>,
    lock_path: PathBuf,
    _lock: File,
}

impl Orphan {
    /// Deletes the orphan's segments, then its lock file: call once its events are committed.
    pub fn remove(self) -> io::Result<()> {
        for seg in &self.segments {
            match std::fs::remove_file(seg) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match std::fs::remove_file(&self.lock_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The journals in `dir` whose owner process is gone (its lock can be taken), except
/// `own`. Segments of live processes are never touched.
pub fn recover_orphans(dir: &Path, own: Option<&str>) -> io::Result<Vec<Orphan>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut owners: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if let Some(owner) = name.strip_suffix(".lock") {
            owners.entry(owner.to_owned()).or_default();
        } else if let Some(owner) = name.strip_suffix(".jsonl").and_then(|n| n.rsplit_once('.')).map(|(o, _)| o) {
            owners.entry(owner.to_owned()).or_default().push(path.clone());
        }
    }
    let mut out = Vec::new();
    for (owner, mut segments) in owners {
        if Some(owner.as_str()) == own {
            continue;
        }
        let lock_path = lock_path(dir, &owner);
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        if !try_lock(&lock)? {
            continue;
        }
        segments.sort();
        let (mut events, mut torn_lines) = (Vec::new(), 0);
        for seg in &segments {
            let text = match std::fs::read(seg) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in text.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
                match serde_json::from_slice::<UsageEvent>(line) {
                    Ok(ev) => events.push(ev),
                    Err(e) => {
                        torn_lines += 1;
                        tracing::error!(segment = %seg.display(), error = %e, "unreadable line in the usage journal");
                    }
                }
            }
        }
        out.push(Orphan { owner, events, torn_lines, segments, lock_path, _lock: lock });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> UsageEvent {
        UsageEvent::new(id.into(), 0, "/v1/chat/completions".into())
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_live_journal_is_not_taken_and_a_dead_ones_is_replayed_without_its_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let live = Journal::open(dir.path()).unwrap();
        live.append(&ev("live")).unwrap();
        // Another process that died mid-write: its lock file is unlocked, its last line torn.
        let dead = "4242-jdead";
        let lines = format!(
            "{}\n{}\n{{\"event_id\":\"use_to",
            serde_json::to_string(&ev("a")).unwrap(),
            serde_json::to_string(&ev("b")).unwrap()
        );
        std::fs::write(segment_path(dir.path(), dead, 0), lines).unwrap();
        std::fs::write(segment_path(dir.path(), dead, 1), serde_json::to_string(&ev("c")).unwrap() + "\n").unwrap();
        std::fs::write(lock_path(dir.path(), dead), "").unwrap();

        let orphans = recover_orphans(dir.path(), Some(live.owner())).unwrap();
        assert_eq!(orphans.len(), 1, "only the dead owner's journal");
        let ids: Vec<_> = orphans[0].events.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(orphans[0].torn_lines, 1);
        // Another process looking meanwhile sees it locked by this replay.
        assert!(recover_orphans(dir.path(), Some(live.owner())).unwrap().is_empty());
        // Without naming its own owner, a replayer still cannot take a live journal.
        let other = recover_orphans(dir.path(), None).unwrap();
        assert!(other.is_empty(), "the live journal and the one being replayed are both locked");
        for o in orphans {
            o.remove().unwrap();
        }
        assert_eq!(files(dir.path()), [format!("{}.00000000.jsonl", live.owner()), format!("{}.lock", live.owner())]);
    }

    #[test]
    fn the_journal_is_truncated_once_its_events_are_committed_and_sealed_segments_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let segs: Vec<u64> = (0..3).map(|i| j.append(&ev(&i.to_string())).unwrap()).collect();
        let current = segment_path(dir.path(), j.owner(), 0);
        assert!(std::fs::metadata(&current).unwrap().len() > 0);
        j.committed(&segs[..2]);
        assert!(std::fs::metadata(&current).unwrap().len() > 0, "one event is not committed yet");
        j.committed(&segs[2..]);
        assert_eq!(std::fs::metadata(&current).unwrap().len(), 0, "truncated once all are committed");
        assert_eq!(j.bytes(), 0);

        // Past the segment size with events outstanding: sealed, a new segment opened.
        let big = UsageEvent { error: Some("x".repeat(SEGMENT_BYTES as usize)), ..ev("big") };
        let first = j.append(&big).unwrap();
        let small = j.append(&ev("small")).unwrap();
        j.committed(&[first]);
        let next = j.append(&ev("next")).unwrap();
        assert_eq!((first, small, next), (0, 0, 1));
        assert!(current.exists(), "the sealed segment still holds an uncommitted event");
        j.committed(&[small]);
        assert!(!current.exists(), "the sealed segment is deleted once all its events are committed");
        j.committed(&[next]);
        j.close();
        assert!(files(dir.path()).is_empty(), "a clean stop leaves nothing: {:?}", files(dir.path()));
    }

    #[test]
    fn append_cost() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let mut e = ev("req_0123456789abcdefghijklmnop");
        e.key_id = Some("key_0123456789abcdefghijklmnop".into());
        e.org_id = Some("org_0123456789abcdefghijklmnop".into());
        e.model = Some("gpt-4o-mini".into());
        e.channel = Some("openai/gpt-4o-mini".into());
        let line = serde_json::to_vec(&e).unwrap().len();
        let n = 100_000u32;
        let started = std::time::Instant::now();
        let mut segs = Vec::with_capacity(1000);
        for _ in 0..n {
            segs.push(j.append(&e).unwrap());
            if segs.len() == 1000 {
                j.committed(&segs);
                segs.clear();
            }
        }
        let took = started.elapsed();
        let serializing = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(serde_json::to_vec(&e).unwrap());
        }
        let serialize = serializing.elapsed();
        // Four threads appending at once: the mutex's contention.
        let j = std::sync::Arc::new(j);
        let contended = std::time::Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (j, e) = (j.clone(), e.clone());
                std::thread::spawn(move || {
                    for _ in 0..n / 4 {
                        j.append(&e).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let parallel = contended.elapsed();
        println!(
            "usage journal: {n} appends of {line}-byte lines (serialize + write(2) under the mutex, truncated every \
             1000) in {took:?}: {} ns per append, of which serializing {} ns; 4 threads appending {n} at once: \
             {} ns per append (wall)",
            took.as_nanos() / u128::from(n),
            serialize.as_nanos() / u128::from(n),
            parallel.as_nanos() / u128::from(n)
        );
    }
}
