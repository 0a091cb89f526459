//! [`StateMachine`] for kv-core's [`Store`]: the etcd v2 store, replicated.

use kv_core::{Command, Event, Store};

use crate::state_machine::StateMachine;

impl StateMachine for Store {
    type Command = Command;
    /// The event, or the etcd error the command produced (identically on every member).
    type Output = Result<Event, kv_core::Error>;

    fn apply(&mut self, _index: u64, command: Command) -> Self::Output {
        Store::apply(self, &command)
    }

    fn snapshot(&self, mut w: &mut dyn std::io::Write) -> std::io::Result<()> {
        Store::snapshot(self, &mut w)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }

    fn restore(&mut self, mut r: &mut dyn std::io::Read) -> Result<(), String> {
        *self = Store::restore(&mut r).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The events of kv-core's event history (the last 1000) from store index `from` on.
    fn history(&self, from: u64) -> Option<Vec<Self::Output>> {
        let h = Store::history(self);
        if from > self.index() {
            return Some(Vec::new());
        }
        if h.is_empty() || from < h.start_index() {
            return None;
        }
        Some(
            h.events()
                .filter(|e| e.index >= from)
                .cloned()
                .map(Ok)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_core::Op;

    fn set(key: &str, value: &str) -> Command {
        Command::new(
            1_700_000_000_000,
            Op::Set {
                key: key.into(),
                value: value.into(),
                dir: false,
                ttl: None,
                refresh: false,
            },
        )
    }

    #[test]
    fn store_applies_snapshots_and_reports_history() {
        let mut s = Store::new();
        let e = StateMachine::apply(&mut s, 1, set("/a", "1")).unwrap();
        assert_eq!(e.index, 1);
        StateMachine::apply(&mut s, 2, set("/b", "2")).unwrap();
        let err = StateMachine::apply(&mut s, 3, set("/a/x", "3")).unwrap_err();
        assert_eq!(err.code(), 104, "not a directory");
        let mut bytes = Vec::new();
        StateMachine::snapshot(&s, &mut bytes).unwrap();
        let mut copy = Store::new();
        StateMachine::restore(&mut copy, &mut bytes.as_slice()).unwrap();
        assert_eq!(copy.index(), 2);
        assert_eq!(
            copy.get("/b", false, false, 0)
                .unwrap()
                .node
                .value
                .as_deref(),
            Some("2")
        );
        let h = StateMachine::history(&copy, 2).unwrap();
        assert_eq!(h.len(), 1);
        assert!(StateMachine::history(&copy, 9).unwrap().is_empty());
        // Damaged snapshot bytes are refused and the state is kept.
        bytes[10] ^= 0xff;
        assert!(StateMachine::restore(&mut copy, &mut bytes.as_slice()).is_err());
        assert_eq!(copy.index(), 2);
    }
}
