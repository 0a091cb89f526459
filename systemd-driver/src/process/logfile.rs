//! Per-unit output files: bounded by rotation, readable and followable.
//!
//! A unit's stdout and stderr are the same append-mode file, handed to the process
//! directly: output keeps flowing (and nothing is lost) while the supervisor restarts.
//! Rotation is copy-then-truncate (the processes keep their descriptor), so at most
//! twice the bound is kept: `<unit>.log` and `<unit>.log.1`. Lines written between the
//! copy and the truncation can be lost; that window is a few microseconds per rotation.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::log::{LogLine, LogOptions, LogStream};

/// How often followers look for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub(crate) struct LogFiles {
    dir: PathBuf,
    max_bytes: u64,
}

impl LogFiles {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        LogFiles { dir, max_bytes }
    }

    /// The unit's current log file.
    pub(crate) fn path(&self, unit: &str) -> PathBuf {
        self.current(unit)
    }

    fn current(&self, unit: &str) -> PathBuf {
        self.dir.join(format!("{unit}.log"))
    }

    fn previous(&self, unit: &str) -> PathBuf {
        self.dir.join(format!("{unit}.log.1"))
    }

    /// The descriptor a unit's processes write to.
    pub(crate) fn open_append(&self, unit: &str) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.current(unit))
    }

    /// Rotates the unit's file when it has grown past the bound.
    pub(crate) fn rotate_if_needed(&self, unit: &str) {
        let cur = self.current(unit);
        let Ok(meta) = std::fs::metadata(&cur) else {
            return;
        };
        if meta.len() <= self.max_bytes {
            return;
        }
        // Keep at most the bound in the previous file too: only the newest whole lines.
        let Ok(mut f) = File::open(&cur) else { return };
        let skip = meta.len() - self.max_bytes;
        let mut tail = Vec::with_capacity(self.max_bytes as usize);
        if f.seek(SeekFrom::Start(skip)).is_err() || f.read_to_end(&mut tail).is_err() {
            return;
        }
        let start = if skip == 0 {
            0
        } else {
            tail.iter()
                .position(|&b| b == b'\n')
                .map_or(tail.len(), |i| i + 1)
        };
        if std::fs::write(self.previous(unit), &tail[start..]).is_ok()
            && let Ok(f) = OpenOptions::new().write(true).open(&cur)
        {
            let _ = f.set_len(0);
        }
    }

    /// Deletes the unit's files (on unload).
    pub(crate) fn remove(&self, unit: &str) {
        let _ = std::fs::remove_file(self.current(unit));
        let _ = std::fs::remove_file(self.previous(unit));
    }

    /// Appends a line of our own (for example why a unit failed) to the unit's log.
    pub(crate) fn note(&self, unit: &str, message: &str) {
        use std::io::Write;
        if let Ok(mut f) = self.open_append(unit) {
            let _ = writeln!(f, "{message}");
        }
    }

    /// The kept lines (the last `lines` of them), and, when following, the new ones.
    pub(crate) fn stream(&self, unit: &str, opts: LogOptions) -> LogStream {
        let mut text = std::fs::read(self.previous(unit)).unwrap_or_default();
        let mut offset = 0u64;
        if let Ok(mut f) = File::open(self.current(unit)) {
            let before = text.len();
            if f.read_to_end(&mut text).is_ok() {
                offset = (text.len() - before) as u64;
            }
        }
        // A trailing partial line is delivered once complete (when following).
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let partial = text.split_off(complete);
        offset -= partial.len() as u64;
        let mut lines: Vec<String> = String::from_utf8_lossy(&text)
            .lines()
            .map(str::to_owned)
            .collect();
        if let Some(n) = opts.lines {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        let cap = lines.len().max(1) + if opts.follow { 1024 } else { 0 };
        let (tx, rx) = mpsc::channel(cap);
        for message in lines {
            // Capacity was sized for every kept line: this never fails.
            let _ = tx.try_send(LogLine {
                unit: unit.to_owned(),
                message,
            });
        }
        if !opts.follow {
            return LogStream::new(rx, None);
        }
        let files = self.clone();
        let unit = unit.to_owned();
        let task = tokio::spawn(async move { files.follow(unit, offset, tx).await });
        LogStream::new(rx, Some(task.abort_handle()))
    }

    async fn follow(self, unit: String, mut offset: u64, tx: mpsc::Sender<LogLine>) {
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let cur = self.current(&unit);
            let len = std::fs::metadata(&cur).map(|m| m.len()).unwrap_or(0);
            let mut chunk = Vec::new();
            if len < offset {
                // Rotated: what we had not read yet was copied into the previous file.
                let _ = read_from(&self.previous(&unit), offset, &mut chunk);
                offset = 0;
            }
            if len > offset {
                offset += read_from(&cur, offset, &mut chunk).unwrap_or(0);
            }
            pending.extend_from_slice(&chunk);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let message = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if tx
                    .send(LogLine {
                        unit: unit.clone(),
                        message,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

fn read_from(path: &PathBuf, offset: u64, out: &mut Vec<u8>) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let n = f.read_to_end(out)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn reads_rotates_and_follows() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path().to_owned(), 64);
        let mut f = logs.open_append("a.service").unwrap();
        for i in 0..10 {
            writeln!(f, "line {i}").unwrap();
        }
        let mut s = logs.stream(
            "a.service",
            LogOptions {
                lines: Some(2),
                follow: true,
            },
        );
        assert_eq!(s.next().await.unwrap().message, "line 8");
        assert_eq!(s.next().await.unwrap().message, "line 9");
        logs.rotate_if_needed("a.service");
        assert_eq!(
            std::fs::metadata(logs.current("a.service")).unwrap().len(),
            0
        );
        write!(f, "after").unwrap();
        writeln!(f, " rotation").unwrap();
        let line = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line.message, "after rotation");
        let mut all = logs.stream("a.service", LogOptions::default());
        let mut n = 0;
        while all.next().await.is_some() {
            n += 1;
        }
        // 70 bytes were rotated with a 64-byte bound: the oldest line went, 9 stayed.
        assert!(std::fs::metadata(logs.previous("a.service")).unwrap().len() <= 64);
        assert_eq!(n, 10, "rotated and current lines are both kept");
    }
}
