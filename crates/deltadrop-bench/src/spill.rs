//! The peak size of what DataFusion spilled: it spills into a directory under the process's
//! temporary directory (`TMPDIR`) and deletes the files when an operator is done, so the bench
//! samples the directory's size while the work runs. `scripts/bench` gives every measured
//! process its own empty `TMPDIR`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const EVERY: Duration = Duration::from_millis(100);

pub struct Watch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Samples the size of the temporary directory every 100 ms until dropped.
    pub fn start() -> Watch {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                let dir = std::env::temp_dir();
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(size_of(&dir), Ordering::Relaxed);
                    std::thread::sleep(EVERY);
                }
            })
        };
        Watch {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The largest size seen so far (a sample: a spill shorter than 100 ms may be missed).
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The bytes of the files under `dir` (files vanish while it walks: those count as 0).
fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => size_of(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
