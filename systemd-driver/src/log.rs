//! Reading and following a unit's output.

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// One line of a unit's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The unit that wrote it.
    pub unit: String,
    /// The line, without its newline.
    pub message: String,
}

/// What [`UnitDriver::logs`](crate::UnitDriver::logs) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Only the last `n` lines already written (`None`: all that are kept).
    pub lines: Option<usize>,
    /// Keep the stream open and deliver new lines as they are written.
    pub follow: bool,
}

/// A unit's log lines, oldest first. Dropping it stops any following.
#[derive(Debug)]
pub struct LogStream {
    rx: mpsc::Receiver<LogLine>,
    // Aborts the producer (file follower or journalctl reader) when the stream is dropped.
    producer: Option<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LogStream {
    pub(crate) fn new(rx: mpsc::Receiver<LogLine>, producer: Option<AbortHandle>) -> Self {
        LogStream {
            rx,
            producer: producer.map(AbortOnDrop),
        }
    }

    /// The next line; `None` at the end (never, while following, unless the unit is
    /// unloaded or the driver shuts down). Cancel-safe.
    pub async fn next(&mut self) -> Option<LogLine> {
        let line = self.rx.recv().await;
        if line.is_none() {
            self.producer = None;
        }
        line
    }
}
