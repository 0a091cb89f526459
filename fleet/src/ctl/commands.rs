//! fleetctl's unit commands over a [`FleetApi`], step for step as fleet 1.0's: lazy
//! creation (fleet.md §2.3), the state changes of §2.4 with their blocking (§2.6), and the
//! list commands (§2.5), with fleet's messages.
//!
//! Output goes to the given writers so tests see exactly what a terminal would; every
//! function returns the process exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use unit_parser::name::{fleet_mangle_name, validate_fleet_name};

use super::api::{ApiError, FleetApi};
use super::fields;
use super::table;
use crate::api::types::{Machine, Unit, UnitOption};
use crate::registry::{ContentsError, JobState, UnitContents};

/// Where fleetctl writes.
pub struct Io<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
}

/// How long fleetctl waits for units to reach a state (fleet.md §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// `None`: do not wait (`--no-block`). `Some(0)`: wait forever. `Some(n)`: `n`
    /// windows.
    pub attempts: Option<u32>,
    /// How many windows lazy creation waits for new units to report `inactive` (0:
    /// forever). fleet counts `--block-attempts` there, `--no-block` or not.
    pub create_attempts: u32,
    /// One attempt's window (fleet: 2 s).
    pub window: Duration,
    /// How often a unit is re-read within a window (fleet: 250 ms).
    pub poll: Duration,
}

impl Blocking {
    /// fleet's blocking from `--no-block` and `--block-attempts` (`TestGetBlockAttempts`):
    /// `--no-block` wins; a count of 0 or less waits forever.
    pub fn from_flags(no_block: bool, block_attempts: i64) -> Blocking {
        let attempts = u32::try_from(block_attempts.max(0)).unwrap_or(u32::MAX);
        Blocking {
            attempts: (!no_block).then_some(attempts),
            create_attempts: attempts,
            window: Duration::from_secs(2),
            poll: Duration::from_millis(250),
        }
    }
}

fn line(w: &mut dyn Write, s: impl AsRef<str>) {
    // A closed pipe is not an error worth reporting; fleetctl's output is advisory.
    let _ = writeln!(w, "{}", s.as_ref());
}

/// A log line on standard error, stamped as fleet's logger stamps them (UTC here).
pub(crate) fn log(w: &mut dyn Write, level: &str, message: impl AsRef<str>) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let stamp = kv_core::time::format_rfc3339(ms - ms % 1000);
    // `2026-12-08T01:39:10Z` as Go's `2026/12/08 01:39:10`.
    let stamp = stamp
        .trim_end_matches('Z')
        .replacen('-', "/", 2)
        .replacen('T', " ", 1);
    // Go's logger ends a line only if the message does not.
    let message = message.as_ref();
    let _ = write!(w, "{stamp} {level} {message}");
    if !message.ends_with('\n') {
        let _ = writeln!(w);
    }
}

/// fleetctl's file name for an argument: the argument with `.service` appended unless it
/// ends in a unit type fleetctl recognises (`solo` is read from `solo.service`).
fn with_default_type(arg: &str) -> String {
    let base = arg
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if fleet_mangle_name(arg) == base {
        arg.to_owned()
    } else {
        format!("{arg}.service")
    }
}

/// What fleet's `unit.NewUnitNameInfo` tells of a name: `None` without a `.`; otherwise
/// the template's name if the name is an instance (`foo@bar.service` -> `foo@.service`).
fn template_of(name: &str) -> Option<Option<String>> {
    let dot = name.rfind('.')?;
    let (stem, suffix) = name.split_at(dot);
    Some(
        stem.split_once('@')
            .filter(|(_, instance)| !instance.is_empty())
            .map(|(prefix, _)| format!("{prefix}@{suffix}")),
    )
}

/// A unit file's contents from disk; `Ok(None)` when there is no file.
fn read_file(path: &Path) -> Result<Option<UnitContents>, String> {
    if std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    match UnitContents::from_text(&String::from_utf8_lossy(&bytes)) {
        Ok(c) => Ok(Some(c)),
        Err(ContentsError::Fleet(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The template file next to `file` (`dir/web@1.service` -> `dir/web@.service`).
fn sibling(file: &str, template: &str) -> String {
    match file.rfind('/') {
        Some(i) => format!("{}{template}", &file[..=i]),
        None => template.to_owned(),
    }
}

/// The desired states `--replace` may overwrite, per command (fleet.md §2.3).
fn replaceable(command: &str) -> &'static [JobState] {
    match command {
        "submit" => &[JobState::Inactive],
        "load" => &[JobState::Inactive, JobState::Loaded],
        _ => &[JobState::Inactive, JobState::Loaded, JobState::Launched],
    }
}

/// A unit's contents from its API form.
fn contents_of(unit: &Unit) -> Result<UnitContents, String> {
    UnitContents::from_options(unit.options.iter().map(UnitOption::to_go).collect())
        .map_err(|e| format!("Unit({}) in registry cannot be parsed: {e}", unit.name))
}

fn is_global(unit: &Unit) -> bool {
    contents_of(unit).is_ok_and(|c| c.is_global())
}

fn desired(unit: &Unit) -> &'static str {
    unit.desired_state.map_or("", JobState::as_str)
}

/// Where an argument's files are read from.
struct Files<'a> {
    dir: &'a Path,
}

impl Files<'_> {
    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Whether the local file `file` (else, for an instance, its local template) differs
    /// from `unit` (fleet's `isLocalUnitDifferent`); warns of a difference unless
    /// `replace`.
    fn differs(
        &self,
        io: &mut Io<'_>,
        file: &str,
        unit: &Unit,
        replace: bool,
    ) -> Result<bool, String> {
        let registered = contents_of(unit)?.hash();
        let local = |path: &str| -> Result<UnitContents, String> {
            read_file(&self.path(path))?
                .ok_or_else(|| format!("stat {path}: no such file or directory"))
        };
        if let Ok(c) = local(file) {
            let different = c.hash() != registered;
            if different && !replace {
                line(
                    io.err,
                    format!(
                        "WARNING: Unit {} in registry differs from local unit file {file}. Add --replace to override.",
                        unit.name
                    ),
                );
            }
            return Ok(different);
        }
        let base = file.rsplit('/').next().unwrap_or_default();
        let template = match template_of(base) {
            None => {
                return Err(format!(
                    "error extracting information from unit name {file}"
                ));
            }
            Some(None) => {
                return Err(format!(
                    "error Unit {file} does not seem to be a template unit"
                ));
            }
            Some(Some(t)) => t,
        };
        let c = local(&sibling(file, &template))?;
        let different = c.hash() != registered;
        if different && !replace {
            line(
                io.err,
                format!(
                    "WARNING: Unit {} in registry differs from local template unit file {file}. Add --replace to override.",
                    unit.name
                ),
            );
        }
        Ok(different)
    }
}

/// fleetctl's lazy creation (`lazyCreateUnits`): for each argument, the registered unit,
/// else a local file, else the registered template, else a local template (fleet.md
/// §2.3); new units are waited for until they report `inactive`. Returns the message
/// after `Error creating units: ` on failure.
pub async fn lazy_create<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    dir: &Path,
    command: &str,
    args: &[String],
    replace: bool,
    blocking: Blocking,
) -> Result<(), String> {
    let files = Files { dir };
    let mut created = Vec::new();
    for arg in args {
        let file = with_default_type(arg);
        let name = fleet_mangle_name(&file);
        let existing = api
            .unit(&name)
            .await
            .map_err(|e| format!("error retrieving Unit({name}) from Registry: {e}"))?;
        if let Some(unit) = existing {
            let different = files.differs(io, &file, &unit, replace);
            if !replace {
                continue;
            }
            if !different? {
                line(
                    io.out,
                    format!("Found same Unit({}) in Registry, nothing to do", unit.name),
                );
                continue;
            }
            if !unit
                .desired_state
                .is_some_and(|d| replaceable(command).contains(&d))
            {
                line(
                    io.err,
                    format!(
                        "Warning: can not replace Unit({}) in state '{}', use the appropriate command",
                        unit.name,
                        desired(&unit)
                    ),
                );
                continue;
            }
        }
        let contents = unit_file(api, io, &files, &file, &name, replace).await?;
        create(api, io, &name, &contents).await?;
        created.push(name);
    }
    if created.is_empty() {
        return Ok(());
    }
    let attempts = Some(blocking.create_attempts);
    let reached = wait_for(
        api,
        &created,
        Target::Current(JobState::Inactive),
        Blocking {
            attempts,
            ..blocking
        },
    )
    .await;
    let mut failed = false;
    for r in reached {
        match r {
            Ok(l) => line(io.out, l),
            Err(e) => {
                line(io.err, format!("Error waiting on unit creation: {e}"));
                failed = true;
            }
        }
    }
    if failed {
        return Err("One or more errors creating units".into());
    }
    Ok(())
}

/// The contents for a new unit `name` from the argument's file, else its template
/// (fleet's `getUnitFile`).
async fn unit_file<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    files: &Files<'_>,
    file: &str,
    name: &str,
    replace: bool,
) -> Result<UnitContents, String> {
    if let Some(c) = read_file(&files.path(file))
        .map_err(|e| format!("failed getting Unit({file}) from file: {e}"))?
    {
        return Ok(c);
    }
    let template = match template_of(name) {
        None => {
            return Err(format!(
                "error extracting information from unit name {name}"
            ));
        }
        Some(None) => {
            return Err(format!(
                "unable to find Unit({name}) in Registry or on filesystem"
            ));
        }
        Some(Some(t)) => t,
    };
    let from_template = |e: String| format!("failed getting Unit({file}) from template: {e}");
    let registered = api.unit(&template).await.map_err(|e| {
        from_template(format!(
            "error retrieving template Unit({template}) from Registry: {e}"
        ))
    })?;
    if let Some(t) = registered {
        // Only for its warning.
        let _ = files.differs(io, file, &t, replace);
        return contents_of(&t).map_err(from_template);
    }
    match read_file(&files.path(&sibling(file, &template))) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(from_template(format!(
            "unable to find template Unit({template}) in Registry or on filesystem"
        ))),
        Err(e) => Err(from_template(format!(
            "unable to load template Unit({template}) from file: {e}"
        ))),
    }
}

/// Creates a unit as fleetctl does (`createUnit`): the name and options checked as fleet's
/// API checks them, a warning for an unknown `[X-Fleet]` key, then the unit, `inactive`.
async fn create<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    name: &str,
    contents: &UnitContents,
) -> Result<(), String> {
    validate_fleet_name(name).map_err(|e| e.to_string())?;
    unit_parser::xfleet::validate(contents.file()).map_err(|e| e.to_string())?;
    // fleet names one unknown key (the first its map gives); the first in the file here.
    if let Some(w) = unit_parser::xfleet::warnings(contents.file())
        .into_iter()
        .find(|w| w.message.starts_with("unrecognized"))
    {
        log(io.err, "WARN", format!("Unit {name}: {}", w.message));
    }
    let unit = Unit {
        name: name.to_owned(),
        options: UnitOption::of(contents),
        desired_state: Some(JobState::Inactive),
        ..Unit::default()
    };
    api.create_unit(&unit)
        .await
        .map_err(|e| format!("failed creating unit {name}: {e}"))
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// fleet's derived current state (the desired one for global units).
    Current(JobState),
    /// systemd reports the unit `loaded` and `active` on its machine.
    Active,
}

/// Waits, concurrently, for every unit in `names` to reach `target` within `blocking`
/// (which must block); per unit, in order, the line to print or why it did not get there.
async fn wait_for<A: FleetApi>(
    api: &A,
    names: &[String],
    target: Target,
    blocking: Blocking,
) -> Vec<Result<String, ApiError>> {
    let deadline = match blocking.attempts {
        Some(n) if n > 0 => Some(tokio::time::Instant::now() + blocking.window * n),
        _ => None,
    };
    let waits = names.iter().map(|name| async move {
        loop {
            if let Some(done) = reached(api, name, target).await? {
                return Ok(done);
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() + blocking.poll > d) {
                return Err(ApiError::new(match target {
                    Target::Current(s) => {
                        format!("timed out waiting for unit {name} to report state {s}")
                    }
                    Target::Active => {
                        format!("timed out waiting for unit {name} to report active state")
                    }
                }));
            }
            tokio::time::sleep(blocking.poll).await;
        }
    });
    futures::future::join_all(waits).await
}

/// `Some(line to print)` when `name` reached `target`.
async fn reached<A: FleetApi>(
    api: &A,
    name: &str,
    target: Target,
) -> Result<Option<String>, ApiError> {
    match target {
        Target::Current(want) => {
            let Some(u) = api.unit(name).await? else {
                return Ok(None);
            };
            // Global units have no current state; fleet compares the desired one.
            let state = if is_global(&u) {
                u.desired_state
            } else {
                u.current_state
            };
            if state != Some(want) {
                return Ok(None);
            }
            let current = u.current_state.map_or("", JobState::as_str);
            let mut msg = format!("Unit {name} {current}");
            if let Some(id) = &u.machine_id {
                let machines = api.machines().await.unwrap_or_default();
                if let Some(m) = machines.iter().find(|m| &m.id == id) {
                    msg.push_str(" on ");
                    msg.push_str(&fields::machine_legend(id, Some(&m.primary_ip), false));
                }
            }
            Ok(Some(msg))
        }
        Target::Active => {
            let states = api.states().await?;
            let Some(u) = api.unit(name).await? else {
                return Ok(None);
            };
            let on_target = states
                .iter()
                .find(|s| s.name == name && Some(s.machine_id.as_str()) == u.machine_id.as_deref());
            Ok(on_target
                .filter(|s| s.systemd_active_state == "active" && s.systemd_load_state == "loaded")
                .map(|_| String::new()))
        }
    }
}

/// Waits for the units fleetctl changed (fleet's `tryWaitForUnitStates`): with
/// `--no-block` a `Triggered unit <name> <verb>` line each; else a line per unit as it
/// gets there. On a timeout, `Error waiting for units: ...` and the error.
async fn wait_or_trigger<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    names: &[String],
    verb: &str,
    target: Target,
    blocking: Blocking,
) -> Result<(), ApiError> {
    if names.is_empty() {
        return Ok(());
    }
    if blocking.attempts.is_none() {
        for name in names {
            line(io.out, format!("Triggered unit {name} {verb}"));
        }
        return Ok(());
    }
    let mut first = None;
    for r in wait_for(api, names, target, blocking).await {
        match r {
            Ok(l) if l.is_empty() => {}
            Ok(l) => line(io.out, l),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => {
            line(io.err, format!("Error waiting for units: {e}"));
            Err(e)
        }
        None => Ok(()),
    }
}

/// Sets the desired state of every named unit not already in it (fleet's
/// `setTargetStateOfUnits`); returns the units changed, as they were.
async fn set_target_states<A: FleetApi>(
    api: &A,
    names: &[String],
    state: JobState,
) -> Result<Vec<Unit>, String> {
    let mut triggered = Vec::new();
    for name in names {
        let u = match api.unit(name).await {
            Ok(Some(u)) => u,
            Ok(None) => return Err(format!("unable to find unit {name}")),
            Err(e) => return Err(format!("error retrieving unit {name} from registry: {e}")),
        };
        if u.desired_state == Some(state) {
            continue;
        }
        api.set_desired(&u.name, state)
            .await
            .map_err(|e| e.message)?;
        triggered.push(u);
    }
    Ok(triggered)
}

/// `submit`, `load` and `start`; unit files named relatively are read from `dir`.
pub async fn submit_load_start<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    dir: &Path,
    command: &str,
    args: &[String],
    replace: bool,
    blocking: Blocking,
) -> i32 {
    if args.is_empty() {
        line(io.err, "No units given");
        return 0;
    }
    if let Err(e) = lazy_create(api, io, dir, command, args, replace, blocking).await {
        line(io.err, format!("Error creating units: {e}"));
        return 1;
    }
    let (want, verb, failure) = match command {
        "submit" => return 0,
        "load" => (JobState::Loaded, "load", "Error loading units"),
        _ => (JobState::Launched, "start", "Error starting units"),
    };
    let names: Vec<String> = args.iter().map(|a| fleet_mangle_name(a)).collect();
    let triggered = match set_target_states(api, &names, want).await {
        Ok(t) => t,
        Err(e) => {
            line(io.err, format!("{failure}: {e}"));
            return 1;
        }
    };
    let mut waited = Vec::new();
    for u in &triggered {
        if is_global(u) {
            line(io.out, format!("Triggered global unit {} {verb}", u.name));
        } else {
            waited.push(u.name.clone());
        }
    }
    if let Err(e) = wait_or_trigger(api, io, &waited, verb, Target::Current(want), blocking).await {
        line(
            io.err,
            format!("Error waiting for unit states, exit status: {e}"),
        );
        return 1;
    }
    if want != JobState::Launched || blocking.attempts.is_none() {
        // fleet printed the `Triggered` lines a second time here.
        return 0;
    }
    // Unlike fleet (which gives up after its first 2 s window), `start` waits for systemd
    // to report the units active within the same blocking budget.
    if let Err(e) = wait_or_trigger(api, io, &waited, verb, Target::Active, blocking).await {
        line(
            io.err,
            format!("Error waiting for systemd unit states, err: {e}"),
        );
        return 1;
    }
    0
}

/// The registered units named by `args`, in argument order (fleet's `findUnits`).
async fn find_units<A: FleetApi>(api: &A, args: &[String]) -> Result<Vec<Unit>, ApiError> {
    let units = api.units().await?;
    Ok(args
        .iter()
        .filter_map(|a| {
            let name = fleet_mangle_name(a);
            units.iter().find(|u| u.name == name).cloned()
        })
        .collect())
}

/// `[a b]`, as Go prints a list of names.
fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

/// `stop` and `unload`.
pub async fn stop_unload<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    command: &str,
    args: &[String],
    blocking: Blocking,
) -> i32 {
    if args.is_empty() {
        line(io.err, "No units given");
        return 0;
    }
    let found = match find_units(api, args).await {
        Ok(f) => f,
        Err(e) => {
            line(io.err, e.message);
            return 1;
        }
    };
    if found.is_empty() {
        line(io.err, "Units not found in registry");
        return 0;
    }
    let stop = command == "stop";
    let (want, verb, done) = if stop {
        (JobState::Loaded, "stop", "stopped")
    } else {
        (JobState::Inactive, "unload", "unloaded")
    };
    let mut waited = Vec::new();
    for u in &found {
        let global = is_global(u);
        if !global {
            match u.current_state {
                Some(JobState::Inactive) if stop => {
                    line(
                        io.err,
                        format!("Unable to stop unit {} in state inactive", u.name),
                    );
                    return 1;
                }
                Some(JobState::Inactive) => continue,
                Some(JobState::Loaded) if stop => continue,
                _ => {}
            }
        }
        // fleet ignores a failure here; the wait then tells.
        let _ = api.set_desired(&u.name, want).await;
        if global {
            line(io.out, format!("Triggered global unit {} {verb}", u.name));
        } else {
            waited.push(u.name.clone());
        }
    }
    if let Err(e) = wait_or_trigger(api, io, &waited, verb, Target::Current(want), blocking).await {
        let what = if stop { "stop" } else { "unload" };
        line(
            io.err,
            format!("Failed to {what} units {}. err: {e}", go_list(&waited)),
        );
        return 1;
    }
    line(
        io.err,
        format!("Successfully {done} units {}.", go_list(&waited)),
    );
    0
}

/// `destroy`.
pub async fn destroy<A: FleetApi>(api: &A, io: &mut Io<'_>, args: &[String]) -> i32 {
    if args.is_empty() {
        line(io.err, "No units given");
        return 0;
    }
    let found = match find_units(api, args).await {
        Ok(f) => f,
        Err(e) => {
            line(io.err, e.message);
            return 1;
        }
    };
    if found.is_empty() {
        line(io.err, "Units not found in registry");
        return 0;
    }
    let mut code = 0;
    for u in &found {
        match api.destroy(&u.name).await {
            Ok(true) => line(io.out, format!("Destroyed {}", u.name)),
            Ok(false) => {}
            Err(e) => {
                line(io.err, format!("Error destroying units: {e}"));
                code = 1;
            }
        }
    }
    code
}

/// `cat`.
pub async fn cat<A: FleetApi>(api: &A, io: &mut Io<'_>, args: &[String]) -> i32 {
    let [arg] = args else {
        line(io.err, "One unit file must be provided");
        return 1;
    };
    let name = fleet_mangle_name(arg);
    match api.unit(&name).await {
        Ok(Some(u)) => match contents_of(&u) {
            Ok(c) => {
                let _ = io.out.write_all(c.raw().as_bytes());
                0
            }
            Err(e) => {
                line(io.err, e);
                1
            }
        },
        Ok(None) => {
            line(io.err, format!("Unit {name} not found"));
            1
        }
        Err(e) => {
            line(io.err, format!("Error retrieving Unit {name}: {e}"));
            1
        }
    }
}

/// Options of the list commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// `--fields`.
    pub fields: String,
    /// `--full` / `-l`.
    pub full: bool,
    /// `--no-legend`.
    pub no_legend: bool,
}

fn print_table(io: &mut Io<'_>, fields: &[String], no_legend: bool, rows: Vec<Vec<String>>) {
    let mut all = Vec::with_capacity(rows.len() + 1);
    if !no_legend {
        all.push(fields.iter().map(|f| f.to_uppercase()).collect());
    }
    all.extend(rows);
    let _ = io.out.write_all(table::render(&all).as_bytes());
}

/// The columns asked for, checked as fleet checks them (each warned of in turn); `None`
/// after printing what is wrong.
fn columns(io: &mut Io<'_>, opts: &ListOptions, known: &[&str]) -> Option<Vec<String>> {
    if opts.fields.is_empty() {
        line(io.err, fields::FieldsError::Empty.to_string());
        return None;
    }
    let mut out = Vec::new();
    for f in opts.fields.split(',') {
        if !known.contains(&f) {
            line(
                io.err,
                fields::FieldsError::Unknown(f.to_owned()).to_string(),
            );
            return None;
        }
        if f == "tmachine" {
            line(
                io.err,
                "WARNING: The \"tmachine\" field is deprecated. Use \"target\" instead",
            );
        }
        out.push(f.to_owned());
    }
    Some(out)
}

/// The machines, if the columns show them (fleet reads them on demand and ignores a
/// failure).
async fn machines_for<A: FleetApi>(api: &A, cols: &[String], which: &[&str]) -> Vec<Machine> {
    if cols.iter().any(|c| which.contains(&c.as_str())) {
        api.machines().await.unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// `list-units`: one row per published unit state.
pub async fn list_units<A: FleetApi>(api: &A, io: &mut Io<'_>, opts: &ListOptions) -> i32 {
    let Some(f) = columns(io, opts, &fields::UNIT_STATE_FIELDS) else {
        return 1;
    };
    let states = match api.states().await {
        Ok(s) => s,
        Err(e) => {
            line(
                io.err,
                format!("Error retrieving list of units from repository: {e}"),
            );
            return 1;
        }
    };
    let machines = machines_for(api, &f, &["machine"]).await;
    let rows = states
        .iter()
        .map(|s| {
            f.iter()
                .map(|field| fields::unit_state_cell(s, field, &machines, opts.full))
                .collect()
        })
        .collect();
    print_table(io, &f, opts.no_legend, rows);
    0
}

/// `list-unit-files`: one row per submitted unit.
pub async fn list_unit_files<A: FleetApi>(api: &A, io: &mut Io<'_>, opts: &ListOptions) -> i32 {
    let Some(f) = columns(io, opts, &fields::UNIT_FILE_FIELDS) else {
        return 1;
    };
    let units = match api.units().await {
        Ok(u) => u,
        Err(e) => {
            line(
                io.err,
                format!("Error retrieving list of units from repository: {e}"),
            );
            return 1;
        }
    };
    let machines = machines_for(api, &f, &["target", "tmachine"]).await;
    let rows = units
        .iter()
        .map(|u| {
            let contents = contents_of(u).ok();
            let hash = contents
                .as_ref()
                .map(|c| c.hash().to_string())
                .unwrap_or_default();
            let global = contents.as_ref().is_some_and(UnitContents::is_global);
            f.iter()
                .map(|field| fields::unit_file_cell(u, &hash, global, field, &machines, opts.full))
                .collect()
        })
        .collect();
    print_table(io, &f, opts.no_legend, rows);
    0
}

/// `list-machines`.
pub async fn list_machines<A: FleetApi>(api: &A, io: &mut Io<'_>, opts: &ListOptions) -> i32 {
    let Some(f) = columns(io, opts, &fields::MACHINE_FIELDS) else {
        return 1;
    };
    let machines = match api.machines().await {
        Ok(m) => m,
        Err(e) => {
            line(
                io.err,
                format!("Error retrieving list of active machines from fleet API ({e})"),
            );
            line(io.err, "Possible issues:");
            line(io.err, "  etcd is unhealthy and/or lost quorum");
            line(
                io.err,
                "  connection cannot be established to any etcd servers",
            );
            return 1;
        }
    };
    let rows = machines
        .iter()
        .map(|m| {
            f.iter()
                .map(|field| fields::machine_cell(m, field, opts.full))
                .collect()
        })
        .collect();
    print_table(io, &f, opts.no_legend, rows);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_attempts_are_fleets() {
        // fleet's TestGetBlockAttempts.
        for (no_block, n, want) in [
            (true, 0, None),
            (true, -1, None),
            (true, 9999, None),
            (false, 0, Some(0)),
            (false, -1, Some(0)),
            (false, 9999, Some(9999)),
        ] {
            let b = Blocking::from_flags(no_block, n);
            assert_eq!(b.attempts, want, "{no_block} {n}");
            assert_eq!(b.create_attempts, want.unwrap_or(n.max(0) as u32));
        }
    }

    #[test]
    fn file_names_and_templates_are_fleets() {
        assert_eq!(with_default_type("solo"), "solo.service");
        assert_eq!(with_default_type("x.target"), "x.target.service");
        assert_eq!(with_default_type("dir/a.socket"), "dir/a.socket");
        assert_eq!(
            template_of("foo@{1,3}.service"),
            Some(Some("foo@.service".into()))
        );
        assert_eq!(template_of("web@.service"), Some(None));
        assert_eq!(template_of("hello.service"), Some(None));
        assert_eq!(template_of("hello"), None);
        assert_eq!(sibling("d/web@1.service", "web@.service"), "d/web@.service");
        assert_eq!(go_list(&["a".into(), "b".into()]), "[a b]");
        assert_eq!(go_list(&[]), "[]");
    }
}
