//! Every fsync the log makes goes through here. In tests this is also where the power-loss
//! simulation (`power_loss`) learns what the disk holds for certain: the content of each file
//! as of its last fsync and the names in each directory as of its last directory fsync.

use std::fs::File;
use std::io;
use std::path::Path;

/// fdatasync: the file's data (and the size needed to read it back) is on stable storage.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()?;
    #[cfg(test)]
    power_loss::synced_file(file);
    Ok(())
}

/// fsync: `sync_data` plus the file's other metadata.
pub(crate) fn sync_all(file: &File) -> io::Result<()> {
    file.sync_all()?;
    #[cfg(test)]
    power_loss::synced_file(file);
    Ok(())
}

/// Makes file creations, renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    power_loss::synced_dir(dir);
    Ok(())
}

/// A power-loss simulation for tests, at the level of files: a `PowerLoss` records, under one
/// root directory, each file's content at its last fsync (by inode and birth time, so renames keep it) and
/// each directory's entries at its last fsync. `crash` then rewrites the tree as a power loss
/// could leave it: entries never made durable vanish, entries deleted since the last directory
/// fsync come back, and each file holds its last synced content overlaid page by page, at
/// random, with what was written after it, at a random length between the two. Whatever
/// writes files through `durable`'s fsyncs (segments, indexes, checkpoints, and so later the
/// cleaner's swap files) is covered without knowing about the simulation.
#[cfg(test)]
pub(crate) mod power_loss {
    use std::collections::{BTreeMap, HashMap};
    use std::ffi::OsString;
    use std::fs::{File, Metadata};
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::os::unix::io::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::SystemTime;

    /// Pages are kept or lost whole, as the page cache writes them back.
    const PAGE: usize = 4096;

    /// A file's identity: its inode and its birth time, since a deleted file's inode number is
    /// soon reused by a new file.
    type FileId = (u64, Option<SystemTime>);

    fn file_id(meta: &Metadata) -> FileId {
        (meta.ino(), meta.created().ok())
    }

    #[derive(Default)]
    struct Durable {
        /// file -> its content as of its last fsync.
        files: HashMap<FileId, Vec<u8>>,
        /// directory -> entry name -> file, as of its last fsync.
        dirs: HashMap<PathBuf, BTreeMap<OsString, FileId>>,
    }

    struct Recorder {
        root: PathBuf,
        durable: Mutex<Durable>,
    }

    static RECORDERS: Mutex<Vec<Arc<Recorder>>> = Mutex::new(Vec::new());

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recorder_for(path: &Path) -> Option<Arc<Recorder>> {
        let recorders = lock(&RECORDERS);
        recorders.iter().find(|r| path.starts_with(&r.root)).cloned()
    }

    fn read_whole(file: &File) -> Vec<u8> {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let mut buf = vec![0; len];
        let mut done = 0;
        while done < len {
            match file.read_at(&mut buf[done..], done as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        buf.truncate(done);
        buf
    }

    fn listing(dir: &Path) -> BTreeMap<OsString, FileId> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| Some((e.file_name(), file_id(&e.metadata().ok()?))))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn synced_file(file: &File) {
        if lock(&RECORDERS).is_empty() {
            return;
        }
        let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
            return;
        };
        let Some(recorder) = recorder_for(&path) else {
            return;
        };
        let Ok(id) = file.metadata().map(|m| file_id(&m)) else {
            return;
        };
        // Through /proc, because the caller's descriptor may be write-only (append mode).
        let Ok(readable) = File::open(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
            return;
        };
        let content = read_whole(&readable);
        lock(&recorder.durable).files.insert(id, content);
    }

    pub(super) fn synced_dir(dir: &Path) {
        if lock(&RECORDERS).is_empty() {
            return;
        }
        let Ok(dir) = dir.canonicalize() else { return };
        let Some(recorder) = recorder_for(&dir) else {
            return;
        };
        let entries = listing(&dir);
        lock(&recorder.durable).dirs.insert(dir, entries);
    }

    /// A small deterministic generator (splitmix64), so a failing run is replayed from its seed.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed)
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `0..n` (`n` > 0).
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        pub(crate) fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Records what is durable under `root` while it lives.
    pub(crate) struct PowerLoss {
        recorder: Arc<Recorder>,
    }

    impl PowerLoss {
        /// Starts recording under `root`; everything already there counts as durable.
        pub(crate) fn record(root: &Path) -> PowerLoss {
            let root = root.canonicalize().expect("power-loss root");
            let recorder = Arc::new(Recorder {
                root,
                durable: Mutex::new(Durable::default()),
            });
            lock(&RECORDERS).push(Arc::clone(&recorder));
            let loss = PowerLoss { recorder };
            loss.everything_is_durable();
            loss
        }

        /// Takes the tree as it is now as the durable state (after a crash and restart, what
        /// the disk holds is all there is).
        fn everything_is_durable(&self) {
            let mut durable = Durable::default();
            let mut dirs = vec![self.recorder.root.clone()];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    match entry.metadata() {
                        Ok(m) if m.is_dir() => dirs.push(path),
                        Ok(m) => {
                            let content = File::open(&path).map(|f| read_whole(&f)).unwrap_or_default();
                            durable.files.insert(file_id(&m), content);
                        }
                        Err(_) => {}
                    }
                }
                durable.dirs.insert(dir.clone(), listing(&dir));
            }
            *lock(&self.recorder.durable) = durable;
        }

        /// Rewrites the tree as a power loss at this instant could leave it (see the module
        /// documentation), choosing with `rng`. Every process holding files open under the root
        /// must have dropped them first, as a crashed broker has.
        pub(crate) fn crash(&self, rng: &mut Rng) {
            let durable = std::mem::take(&mut *lock(&self.recorder.durable));
            self.restore_dir(&self.recorder.root, &durable, rng);
            self.everything_is_durable();
        }

        fn restore_dir(&self, dir: &Path, durable: &Durable, rng: &mut Rng) {
            let Some(names) = durable.dirs.get(dir) else {
                // A directory whose entries were never made durable: empty after the crash.
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    remove(&entry.path());
                }
                return;
            };
            // Entries created since the last directory fsync are lost.
            let mut current: Vec<_> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            current.sort();
            for name in &current {
                if !names.contains_key(name) {
                    remove(&dir.join(name));
                }
            }
            for (name, &id) in names {
                let path = dir.join(name);
                let meta = std::fs::symlink_metadata(&path).ok();
                if meta.as_ref().is_some_and(|m| m.is_dir()) || durable.dirs.contains_key(&path) {
                    if meta.is_none() {
                        std::fs::create_dir_all(&path).expect("recreate a durable directory");
                    }
                    self.restore_dir(&path, durable, rng);
                    continue;
                }
                let synced = durable.files.get(&id).map(Vec::as_slice).unwrap_or_default();
                // What was written since, if the entry still names the same file.
                let written = match &meta {
                    Some(m) if file_id(m) == id => std::fs::read(&path).unwrap_or_default(),
                    _ => synced.to_vec(),
                };
                let content = torn(synced, &written, rng);
                std::fs::write(&path, content).expect("rewrite a file after the crash");
            }
        }
    }

    impl Drop for PowerLoss {
        fn drop(&mut self) {
            lock(&RECORDERS).retain(|r| !Arc::ptr_eq(r, &self.recorder));
        }
    }

    fn remove(path: &Path) {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        result.expect("remove an entry the crash lost");
    }

    /// A file after a power loss: its synced content, overlaid page by page at random with
    /// what was written after the fsync, at a length from the shorter of the two to the longer.
    fn torn(synced: &[u8], written: &[u8], rng: &mut Rng) -> Vec<u8> {
        let (lo, hi) = (synced.len().min(written.len()), synced.len().max(written.len()));
        let len = match rng.below(3) {
            0 => synced.len(),
            1 => written.len(),
            _ => lo + rng.below((hi - lo) as u64 + 1) as usize,
        };
        let mut out = Vec::with_capacity(len);
        for page in (0..len).step_by(PAGE) {
            let newer = rng.chance(50);
            for i in page..(page + PAGE).min(len) {
                let byte = match (newer, synced.get(i), written.get(i)) {
                    (true, _, Some(&w)) => w,
                    (_, Some(&s), _) => s,
                    (_, None, Some(&w)) => w,
                    (_, None, None) => 0,
                };
                out.push(byte);
            }
        }
        out
    }

    mod tests {
        use super::*;

        #[test]
        fn a_crash_keeps_synced_data_and_drops_what_was_never_made_durable() {
            let dir = tempfile::tempdir().unwrap();
            let loss = PowerLoss::record(dir.path());
            let synced = dir.path().join("synced");
            let unsynced_name = dir.path().join("never-listed");
            {
                let f = File::create(&synced).unwrap();
                f.write_all_at(b"durable", 0).unwrap();
                super::super::sync_data(&f).unwrap();
                super::super::sync_dir(dir.path()).unwrap();
                // Written after the fsync: may or may not survive, never corrupts the rest.
                f.write_all_at(b" and maybe more", 7).unwrap();
                std::fs::write(&unsynced_name, b"gone").unwrap();
            }
            let mut rng = Rng::new(7);
            for _ in 0..20 {
                loss.crash(&mut rng);
                let after = std::fs::read(&synced).unwrap();
                assert!(after.starts_with(b"durable"), "{after:?}");
                assert!(b"durable and maybe more".starts_with(&after));
                assert!(!unsynced_name.exists());
            }
        }

        #[test]
        fn a_file_deleted_without_a_directory_fsync_comes_back() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("kept");
            {
                let f = File::create(&path).unwrap();
                f.write_all_at(b"abc", 0).unwrap();
                super::super::sync_data(&f).unwrap();
            }
            let loss = PowerLoss::record(dir.path());
            std::fs::remove_file(&path).unwrap();
            loss.crash(&mut Rng::new(1));
            assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        }
    }
}
