//! A submitted unit as the registry holds it: its contents (shared by hash) and its job.

use std::sync::Arc;

use scheduler::{Desired, UnitSpec};
use unit_parser::UnitFile;
use unit_parser::hash::{GoOption, UnitHash};

/// A unit's desired or current state in fleet's model: `inactive`, `loaded`, `launched`.
/// The scheduler's type, so the engine hands it over as it is.
pub type JobState = Desired;

/// The contents of a unit file as fleet stores them: the normalised text, the options in
/// file order (what the API shows), and the parsed file (what the scheduler and the agent
/// read). Immutable and content-addressed: one copy per hash, shared by every unit that
/// has it (the instances of a template).
#[derive(Debug)]
pub struct UnitContents {
    hash: UnitHash,
    raw: String,
    options: Vec<GoOption>,
    file: UnitFile,
    global: bool,
}

/// Why a unit's contents cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentsError {
    /// go-systemd (so fleet) cannot parse the text.
    #[error("unit file cannot be parsed as fleet does: {0}")]
    Fleet(#[from] unit_parser::hash::HashError),
    /// systemd's own parser refuses the text.
    #[error("unit file cannot be parsed: {0}")]
    Systemd(#[from] unit_parser::ParseError),
}

impl UnitContents {
    /// Contents from a unit file's text: normalised as fleet does (comments, blank lines
    /// and spaces around `=` dropped), then hashed.
    ///
    /// # Errors
    /// [`ContentsError`] when the text cannot be parsed.
    pub fn from_text(text: &str) -> Result<UnitContents, ContentsError> {
        let options = unit_parser::hash::go_deserialize(text.as_bytes())?;
        Ok(UnitContents::from_options(options)?)
    }

    /// Contents from options in file order (as the API receives them).
    ///
    /// # Errors
    /// [`unit_parser::ParseError`] when the serialised options are not a unit file
    /// systemd's parser accepts (a value with a newline, say).
    pub fn from_options(options: Vec<GoOption>) -> Result<UnitContents, unit_parser::ParseError> {
        let bytes = unit_parser::hash::go_serialize(&options);
        let hash = UnitHash::of_bytes(&bytes);
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let file = UnitFile::parse(&raw)?;
        let global = unit_parser::xfleet::XFleet::parse(&file, None)
            .xfleet
            .global;
        Ok(UnitContents {
            hash,
            raw,
            options,
            file,
            global,
        })
    }

    /// fleet's hash of the contents.
    pub fn hash(&self) -> UnitHash {
        self.hash
    }

    /// The normalised text, as stored under `unit/<hash>` and printed by `fleetctl cat`.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The options in file order.
    pub fn options(&self) -> &[GoOption] {
        &self.options
    }

    /// The parsed file.
    pub fn file(&self) -> &UnitFile {
        &self.file
    }

    /// Whether `[X-Fleet] Global=` is true: the unit runs on every matching machine and is
    /// never scheduled by the engine.
    pub fn is_global(&self) -> bool {
        self.global
    }

    /// The scheduler's view of a unit with these contents named `name` (specifiers of
    /// `[X-Fleet]` resolved against `name`).
    pub fn spec(&self, name: &str, desired: JobState) -> UnitSpec {
        let mut spec = UnitSpec::from_unit_file(name, &self.file);
        spec.desired = desired;
        spec
    }

    /// The `[Unit] Description=`, if any (the first one, as fleetctl shows it).
    pub fn description(&self) -> Option<&str> {
        self.file.get_list("Unit", "Description").first().copied()
    }
}

/// One submitted unit: fleet's job record with its contents.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The unit's name (`web@1.service`).
    pub name: String,
    /// Its contents.
    pub contents: Arc<UnitContents>,
    /// The desired state (`job/<unit>/target-state`).
    pub desired: JobState,
    /// The machine the engine scheduled it on (`job/<unit>/target`); never set for global
    /// units.
    pub target: Option<String>,
    /// The machine whose agent launched it and is alive (`job/<unit>/job-state`).
    pub launched_on: Option<String>,
}

impl Unit {
    /// Whether the unit is global.
    pub fn is_global(&self) -> bool {
        self.contents.is_global()
    }

    /// fleet's derived current state (`None` for global units): `inactive` without a
    /// target or without a state record from the target machine, `launched` when the
    /// target also holds the launch heartbeat, `loaded` otherwise.
    /// `state_on_target` says whether `states/<unit>/<target>` exists.
    pub fn current_state(&self, state_on_target: bool) -> Option<JobState> {
        if self.is_global() {
            return None;
        }
        let Some(target) = &self.target else {
            return Some(JobState::Inactive);
        };
        if !state_on_target {
            return Some(JobState::Inactive);
        }
        if self.launched_on.as_deref() == Some(target.as_str()) {
            Some(JobState::Launched)
        } else {
            Some(JobState::Loaded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_normalised_and_hashed_as_fleet() {
        let c = UnitContents::from_text("# comment\n[Service]\nExecStart = /bin/sleep 100\n\n\n")
            .unwrap();
        assert_eq!(c.raw(), "[Service]\nExecStart=/bin/sleep 100\n");
        assert_eq!(
            c.hash().to_string(),
            "1c6fb6f3684bafb0c173d8b8b957ceff031180c1"
        );
        assert_eq!(c.options().len(), 1);
        let same = UnitContents::from_options(c.options().to_vec()).unwrap();
        assert_eq!(same.hash(), c.hash());
    }

    #[test]
    fn global_is_fleets_truthy_last_value() {
        let g = |t: &str| UnitContents::from_text(t).unwrap().is_global();
        assert!(g("[X-Fleet]\nGlobal=true\n"));
        assert!(g("[X-Fleet]\nGlobal=T\n"));
        assert!(!g("[X-Fleet]\nGlobal=12\n"));
        assert!(!g("[X-Fleet]\nGlobal=yes\nGlobal=no\n"));
        assert!(!g("[Service]\nGlobal=true\n"));
    }

    #[test]
    fn current_state_is_derived_as_fleet() {
        let c = Arc::new(UnitContents::from_text("[Service]\nExecStart=/bin/true\n").unwrap());
        let mut u = Unit {
            name: "a.service".into(),
            contents: c,
            desired: JobState::Launched,
            target: None,
            launched_on: None,
        };
        assert_eq!(u.current_state(true), Some(JobState::Inactive));
        u.target = Some("m1".into());
        assert_eq!(u.current_state(false), Some(JobState::Inactive));
        assert_eq!(u.current_state(true), Some(JobState::Loaded));
        u.launched_on = Some("m2".into());
        assert_eq!(u.current_state(true), Some(JobState::Loaded));
        u.launched_on = Some("m1".into());
        assert_eq!(u.current_state(true), Some(JobState::Launched));
    }
}
