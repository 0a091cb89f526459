//! [`FakeDriver`]: an in-memory [`UnitDriver`] for other crates' tests (feature `test-util`).
//!
//! Units move instantly: `start` makes a unit `loaded/active/running`, `stop` makes it
//! `loaded/inactive/dead`. Tests can force any state ([`FakeDriver::set_state`]), feed log
//! lines ([`FakeDriver::push_log`]), make operations fail ([`FakeDriver::fail`]) and check
//! the calls made ([`FakeDriver::calls`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::UnitDriver;
use crate::error::{Error, Result};
use crate::log::{LogLine, LogOptions, LogStream};
use crate::state::{
    ActiveState, Broadcaster, LoadState, ServiceResult, Subscription, UnitState, UnitStatus,
};

/// One call made to a [`FakeDriver`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `load(name, contents)`
    Load(String, String),
    /// `start(name)`
    Start(String),
    /// `stop(name)`
    Stop(String),
    /// `reload(name)`
    Reload(String),
    /// `unload(name)`
    Unload(String),
}

#[derive(Debug, Default)]
struct FakeState {
    units: BTreeMap<String, (String, UnitStatus)>,
    logs: HashMap<String, Vec<String>>,
    followers: HashMap<String, Vec<mpsc::Sender<LogLine>>>,
    calls: Vec<Call>,
    failing: HashMap<String, String>,
}

/// An in-memory driver. Clones share state.
#[derive(Debug, Clone)]
pub struct FakeDriver {
    state: Arc<Mutex<FakeState>>,
    events: Broadcaster,
}

impl Default for FakeDriver {
    fn default() -> Self {
        FakeDriver::new()
    }
}

impl FakeDriver {
    /// An empty driver.
    pub fn new() -> Self {
        FakeDriver {
            state: Arc::new(Mutex::new(FakeState::default())),
            events: Broadcaster::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake driver lock")
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The contents loaded for `name`.
    pub fn contents(&self, name: &str) -> Option<String> {
        self.lock().units.get(name).map(|(c, _)| c.clone())
    }

    /// Forces a unit's state (e.g. `failed/failed`), notifying subscribers.
    pub fn set_state(&self, name: &str, state: UnitState) {
        let mut st = self.lock();
        if let Some((_, status)) = st.units.get_mut(name) {
            status.state = state.clone();
            drop(st);
            self.events.send(name, Some(state));
        }
    }

    /// Makes every later call of `operation` (`"load"`, `"start"`, `"stop"`, `"reload"`,
    /// `"unload"`) on `name` fail with [`Error::Unsupported`] carrying `message`.
    pub fn fail(&self, operation: &str, name: &str, message: &str) {
        self.lock()
            .failing
            .insert(format!("{operation} {name}"), message.to_owned());
    }

    /// Appends a line to a unit's log (delivered to followers too).
    pub fn push_log(&self, name: &str, message: &str) {
        let mut st = self.lock();
        st.logs
            .entry(name.to_owned())
            .or_default()
            .push(message.to_owned());
        if let Some(fs) = st.followers.get_mut(name) {
            fs.retain(|tx| {
                tx.try_send(LogLine {
                    unit: name.to_owned(),
                    message: message.to_owned(),
                })
                .is_ok()
            });
        }
    }

    fn check(&self, st: &FakeState, op: &str, name: &str) -> Result<()> {
        match st.failing.get(&format!("{op} {name}")) {
            Some(m) => Err(Error::Unsupported {
                unit: name.to_owned(),
                message: m.clone(),
            }),
            None => Ok(()),
        }
    }

    fn transition(
        &self,
        name: &str,
        call: Call,
        op: &str,
        to: Option<(ActiveState, &str)>,
    ) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(call);
        self.check(&st, op, name)?;
        let (_, status) = st
            .units
            .get_mut(name)
            .ok_or_else(|| Error::NotLoaded(name.to_owned()))?;
        if let Some((active, sub)) = to {
            let state = UnitState::new(LoadState::Loaded, active, sub);
            if status.state != state {
                status.state = state.clone();
                drop(st);
                self.events.send(name, Some(state));
            }
        }
        Ok(())
    }
}

impl UnitDriver for FakeDriver {
    async fn load(&self, name: &str, contents: &str) -> Result<()> {
        let mut st = self.lock();
        st.calls
            .push(Call::Load(name.to_owned(), contents.to_owned()));
        self.check(&st, "load", name)?;
        let new = !st.units.contains_key(name);
        let entry = st.units.entry(name.to_owned()).or_insert_with(|| {
            let status = UnitStatus {
                name: name.to_owned(),
                state: UnitState::loaded_dead(),
                main_pid: None,
                result: ServiceResult::Success,
                status_text: None,
            };
            (String::new(), status)
        });
        entry.0 = contents.to_owned();
        drop(st);
        if new {
            self.events.send(name, Some(UnitState::loaded_dead()));
        }
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<()> {
        self.transition(
            name,
            Call::Start(name.to_owned()),
            "start",
            Some((ActiveState::Active, "running")),
        )
    }

    async fn stop(&self, name: &str) -> Result<()> {
        self.transition(
            name,
            Call::Stop(name.to_owned()),
            "stop",
            Some((ActiveState::Inactive, "dead")),
        )
    }

    async fn reload(&self, name: &str) -> Result<()> {
        self.transition(name, Call::Reload(name.to_owned()), "reload", None)
    }

    async fn unload(&self, name: &str) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(Call::Unload(name.to_owned()));
        self.check(&st, "unload", name)?;
        let existed = st.units.remove(name).is_some();
        st.followers.remove(name);
        drop(st);
        if existed {
            self.events.send(name, None);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<UnitStatus>> {
        Ok(self.lock().units.values().map(|(_, s)| s.clone()).collect())
    }

    async fn status(&self, name: &str) -> Result<UnitStatus> {
        Ok(self
            .lock()
            .units
            .get(name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| UnitStatus {
                name: name.to_owned(),
                state: UnitState::new(LoadState::NotFound, ActiveState::Inactive, "dead"),
                main_pid: None,
                result: ServiceResult::Success,
                status_text: None,
            }))
    }

    async fn subscribe(&self) -> Result<Subscription> {
        Ok(self.events.subscribe())
    }

    async fn logs(&self, name: &str, opts: LogOptions) -> Result<LogStream> {
        let mut st = self.lock();
        let lines = st.logs.get(name).cloned().unwrap_or_default();
        let skip = opts.lines.map_or(0, |n| lines.len().saturating_sub(n));
        let (tx, rx) = mpsc::channel(lines.len().max(1) + 1024);
        for message in lines.into_iter().skip(skip) {
            let _ = tx.try_send(LogLine {
                unit: name.to_owned(),
                message,
            });
        }
        if opts.follow {
            st.followers.entry(name.to_owned()).or_default().push(tx);
        }
        Ok(LogStream::new(rx, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moves_and_records() {
        let d = FakeDriver::new();
        let mut sub = d.subscribe().await.unwrap();
        d.load("a.service", "[Service]\nExecStart=/bin/true\n")
            .await
            .unwrap();
        d.start("a.service").await.unwrap();
        assert_eq!(
            d.status("a.service").await.unwrap().state.to_string(),
            "loaded/active/running"
        );
        assert_eq!(
            sub.recv().await.unwrap().state.unwrap().to_string(),
            "loaded/inactive/dead"
        );
        assert_eq!(
            sub.recv().await.unwrap().state.unwrap().to_string(),
            "loaded/active/running"
        );
        d.fail("stop", "a.service", "boom");
        assert!(d.stop("a.service").await.is_err());
        assert!(matches!(
            d.start("b.service").await,
            Err(Error::NotLoaded(_))
        ));
        let mut logs = d
            .logs(
                "a.service",
                LogOptions {
                    lines: None,
                    follow: true,
                },
            )
            .await
            .unwrap();
        d.push_log("a.service", "hi");
        assert_eq!(logs.next().await.unwrap().message, "hi");
        d.unload("a.service").await.unwrap();
        assert_eq!(sub.recv().await.unwrap().state, None);
        assert_eq!(d.calls().len(), 5);
    }
}
