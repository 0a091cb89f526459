//! fleetctl's unit commands over a [`FleetApi`]: lazy creation (fleet.md §2.3), the state
//! changes of §2.4 with their blocking (§2.6), and the list commands (§2.5).
//!
//! Output goes to the given writers so tests see exactly what a terminal would; every
//! function returns the process exit code.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::try_join_all;
use unit_parser::name::{UnitName, fleet_mangle_name, validate_fleet_name};

use super::api::{ApiError, FleetApi};
use super::fields;
use super::table;
use crate::api::types::{Unit, UnitOption};
use crate::registry::{JobState, UnitContents};

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
    /// One attempt's window (fleet: 2 s).
    pub window: Duration,
    /// How often a unit is re-read within a window (fleet: 250 ms).
    pub poll: Duration,
}

impl Blocking {
    /// fleet's blocking from `--no-block` and `--block-attempts` (`TestGetBlockAttempts`):
    /// `--no-block` wins; a count of 0 or less waits forever.
    pub fn from_flags(no_block: bool, block_attempts: i64) -> Blocking {
        Blocking {
            attempts: if no_block {
                None
            } else {
                Some(u32::try_from(block_attempts.max(0)).unwrap_or(u32::MAX))
            },
            window: Duration::from_secs(2),
            poll: Duration::from_millis(250),
        }
    }

    /// The deadline of a wait starting now; `None` waits forever.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        match self.attempts {
            Some(n) if n > 0 => Some(tokio::time::Instant::now() + self.window * n),
            _ => None,
        }
    }
}

fn line(w: &mut dyn Write, s: impl AsRef<str>) {
    // A closed pipe is not an error worth reporting; fleetctl's output is advisory.
    let _ = writeln!(w, "{}", s.as_ref());
}

/// A unit file found on disk for an argument.
struct LocalFile {
    path: PathBuf,
    contents: UnitContents,
}

fn read_local(path: &Path) -> Result<Option<LocalFile>, String> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("failed reading unit file {}: {e}", path.display()))?;
    let contents = UnitContents::from_text(&text)
        .map_err(|e| format!("failed creating unit from file {}: {e}", path.display()))?;
    Ok(Some(LocalFile {
        path: path.to_path_buf(),
        contents,
    }))
}

/// The template file next to `arg` for an instance name (`dir/foo@1.service` ->
/// `dir/foo@.service`).
fn local_template(arg: &str, name: &UnitName) -> Option<PathBuf> {
    let template = name.template()?;
    let dir = Path::new(arg).parent().unwrap_or(Path::new(""));
    Some(dir.join(template.as_str()))
}

/// The desired states `--replace` may overwrite, per command (fleet.md §2.3).
fn replaceable(command: &str) -> &'static [JobState] {
    match command {
        "submit" => &[JobState::Inactive],
        "load" => &[JobState::Inactive, JobState::Loaded],
        _ => &[JobState::Inactive, JobState::Loaded, JobState::Launched],
    }
}

/// A unit to create from contents.
fn unit_of(name: &str, contents: &UnitContents) -> Unit {
    Unit {
        name: name.to_owned(),
        options: UnitOption::of(contents),
        desired_state: Some(JobState::Inactive),
        ..Unit::default()
    }
}

/// fleetctl's lazy creation: for each argument, the registered unit, or a local file, or
/// the registered template, or a local template (fleet.md §2.3). Returns the units in
/// argument order, or the exit code after printing the error.
pub async fn lazy_create<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    command: &str,
    args: &[String],
    replace: bool,
    blocking: Blocking,
) -> Result<Vec<Unit>, i32> {
    let mut out = Vec::new();
    let mut created = Vec::new();
    for arg in args {
        let name = fleet_mangle_name(arg);
        if let Err(e) = validate_fleet_name(&name) {
            line(io.err, format!("Error creating units: {e}"));
            return Err(1);
        }
        let fail = |io: &mut Io<'_>, msg: String| {
            line(io.err, format!("Error creating units: {msg}"));
            Err(1)
        };
        let local = match read_local(Path::new(arg)) {
            Ok(l) => l,
            Err(e) => return fail(io, e),
        };
        let existing = match api.unit(&name).await {
            Ok(u) => u,
            Err(e) => return fail(io, e.message),
        };
        if let Some(unit) = existing {
            let registered = contents_of(&unit);
            // For an instance without its own file, compare with the local template.
            let local = match local {
                Some(l) => Some(l),
                None => match UnitName::parse(&name)
                    .ok()
                    .and_then(|n| local_template(arg, &n))
                {
                    Some(t) => match read_local(&t) {
                        Ok(l) => l,
                        Err(e) => return fail(io, e),
                    },
                    None => None,
                },
            };
            if let (Some(local), Ok(registered)) = (local, registered) {
                if local.contents.hash() != registered.hash() {
                    if !replace {
                        line(
                            io.err,
                            format!(
                                "WARNING: Unit {name} in registry differs from local unit file {}. Add --replace to override.",
                                local.path.display()
                            ),
                        );
                    } else {
                        let desired = unit.desired_state.unwrap_or(JobState::Inactive);
                        if !replaceable(command).contains(&desired) {
                            line(
                                io.err,
                                format!(
                                    "Warning: can not replace Unit({name}) in state '{desired}', use the appropriate command"
                                ),
                            );
                            continue;
                        }
                        if let Err(e) = api.create_unit(&unit_of(&name, &local.contents)).await {
                            return fail(io, e.message);
                        }
                        created.push(name.clone());
                        out.push(unit_of(&name, &local.contents));
                        continue;
                    }
                } else if replace {
                    line(
                        io.out,
                        format!("Found same Unit({name}) in Registry, nothing to do"),
                    );
                }
            }
            out.push(unit);
            continue;
        }
        let contents = if let Some(local) = local {
            local.contents
        } else {
            let parsed = UnitName::parse(&name).ok();
            let template = parsed.as_ref().and_then(UnitName::template);
            let Some(template) = template else {
                return fail(
                    io,
                    format!("unable to find Unit({name}) in Registry or on filesystem"),
                );
            };
            let registered = match api.unit(template.as_str()).await {
                Ok(t) => t,
                Err(e) => return fail(io, e.message),
            };
            match registered {
                Some(t) => match contents_of(&t) {
                    Ok(c) => c,
                    Err(e) => return fail(io, e),
                },
                None => {
                    let path = local_template(arg, parsed.as_ref().expect("parsed"))
                        .expect("an instance has a template");
                    match read_local(&path) {
                        Ok(Some(l)) => l.contents,
                        Ok(None) => {
                            return fail(
                                io,
                                format!(
                                    "unable to find template Unit({}) in Registry or on filesystem",
                                    template.as_str()
                                ),
                            );
                        }
                        Err(e) => return fail(io, e),
                    }
                }
            }
        };
        if let Err(e) = unit_parser::xfleet::validate(contents.file()) {
            return fail(io, e.to_string());
        }
        for w in unit_parser::xfleet::warnings(contents.file()) {
            line(io.err, format!("WARN Unit {name}: {}", w.message));
        }
        let unit = unit_of(&name, &contents);
        if let Err(e) = api.create_unit(&unit).await {
            return fail(io, e.message);
        }
        created.push(name);
        out.push(unit);
    }
    // fleet waits for each new unit to report `inactive`.
    if !created.is_empty() && blocking.attempts.is_some() {
        let code = wait_for(
            api,
            io,
            &created,
            Target::Current(JobState::Inactive),
            blocking,
        )
        .await;
        if code != 0 {
            return Err(code);
        }
    }
    Ok(out)
}

/// A unit's contents from its API form.
fn contents_of(unit: &Unit) -> Result<UnitContents, String> {
    UnitContents::from_options(unit.options.iter().map(UnitOption::to_go).collect())
        .map_err(|e| format!("Unit({}) in registry cannot be parsed: {e}", unit.name))
}

fn is_global(unit: &Unit) -> bool {
    contents_of(unit).is_ok_and(|c| c.is_global())
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// fleet's derived current state.
    Current(JobState),
    /// systemd reports the unit `loaded` and `active` on its machine.
    Active,
}

/// Waits, concurrently, for every unit in `names` to reach `target`, printing a line per
/// unit as it does. Returns the exit code.
async fn wait_for<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    names: &[String],
    target: Target,
    blocking: Blocking,
) -> i32 {
    let deadline = blocking.deadline();
    let waits = names.iter().map(|name| async move {
        loop {
            if let Some(done) = reached(api, name, target).await? {
                return Ok::<(String, String), ApiError>((name.clone(), done));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() + blocking.poll > d) {
                let what = match target {
                    Target::Current(s) => s.as_str().to_owned(),
                    Target::Active => "active".into(),
                };
                return Err(ApiError::new(format!(
                    "timed out waiting for unit {name} to report state {what}"
                )));
            }
            tokio::time::sleep(blocking.poll).await;
        }
    });
    match try_join_all(waits).await {
        Ok(lines) => {
            for (_, l) in lines {
                if !l.is_empty() {
                    line(io.out, l);
                }
            }
            0
        }
        Err(e) => {
            line(io.err, e.message);
            1
        }
    }
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
            if is_global(&u) {
                // Global units have no current state; fleet compares the desired one.
                return Ok((u.desired_state == Some(want)).then(|| format!("Unit {name} ")));
            }
            if u.current_state != Some(want) {
                return Ok(None);
            }
            if want == JobState::Inactive {
                return Ok(Some(format!("Unit {name} inactive")));
            }
            let machines = api.machines().await?;
            let legend = match &u.machine_id {
                Some(id) => {
                    let ip = machines
                        .iter()
                        .find(|m| &m.id == id)
                        .map(|m| m.primary_ip.as_str());
                    fields::machine_legend(id, ip, false)
                }
                None => "-".into(),
            };
            Ok(Some(format!("Unit {name} {want} on {legend}")))
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

/// `submit`, `load` and `start`.
pub async fn submit_load_start<A: FleetApi>(
    api: &A,
    io: &mut Io<'_>,
    command: &str,
    args: &[String],
    replace: bool,
    blocking: Blocking,
) -> i32 {
    if args.is_empty() {
        line(io.err, "No units given");
        return 0;
    }
    let units = match lazy_create(api, io, command, args, replace, blocking).await {
        Ok(u) => u,
        Err(code) => return code,
    };
    let want = match command {
        "submit" => return 0,
        "load" => JobState::Loaded,
        _ => JobState::Launched,
    };
    let verb = if command == "load" { "load" } else { "start" };
    let mut waited = Vec::new();
    let mut seen = BTreeSet::new();
    for u in &units {
        if !seen.insert(u.name.clone()) {
            continue;
        }
        // fleet's API refuses this; its etcd driver did not, and a scheduled template
        // wedged the agent that got it.
        if UnitName::parse(&u.name).is_ok_and(|n| n.is_template()) {
            line(
                io.err,
                format!(
                    "Error setting target state: cannot activate template {}",
                    unit_parser::name::go_quote_str(&u.name)
                ),
            );
            return 1;
        }
        if u.desired_state != Some(want)
            && let Err(e) = api.set_desired(&u.name, want).await
        {
            line(io.err, format!("Error setting target state: {e}"));
            return 1;
        }
        if is_global(u) {
            line(io.out, format!("Triggered global unit {} {verb}", u.name));
        } else if blocking.attempts.is_none() {
            line(io.out, format!("Triggered unit {} {verb}", u.name));
        } else {
            waited.push(u.name.clone());
        }
    }
    if waited.is_empty() {
        return 0;
    }
    let code = wait_for(api, io, &waited, Target::Current(want), blocking).await;
    if code != 0 || want != JobState::Launched {
        return code;
    }
    // Unlike fleet (which gives up after its first 2 s window), `start` waits for systemd
    // to report the units active within the same blocking budget.
    let code = wait_for(api, io, &waited, Target::Active, blocking).await;
    if code != 0 {
        line(io.err, "Error waiting for systemd unit states");
    }
    code
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
    let mut found = Vec::new();
    for arg in args {
        let name = fleet_mangle_name(arg);
        match api.unit(&name).await {
            Ok(Some(u)) => found.push(u),
            Ok(None) => {}
            Err(e) => {
                line(io.err, format!("Error retrieving unit: {e}"));
                return 1;
            }
        }
    }
    if found.is_empty() {
        line(io.err, "Units not found in registry");
        return 0;
    }
    let (want, verb, done) = if command == "stop" {
        (JobState::Loaded, "stop", "stopped")
    } else {
        (JobState::Inactive, "unload", "unloaded")
    };
    let mut waited = Vec::new();
    for u in &found {
        let global = is_global(u);
        if !global {
            match (command, u.current_state) {
                ("stop", Some(JobState::Inactive)) => {
                    line(
                        io.err,
                        format!("Unable to {verb} unit {} in state inactive", u.name),
                    );
                    return 1;
                }
                ("stop", Some(JobState::Loaded)) | ("unload", Some(JobState::Inactive)) => {
                    continue;
                }
                _ => {}
            }
        }
        if let Err(e) = api.set_desired(&u.name, want).await {
            line(io.err, format!("Error setting target state: {e}"));
            return 1;
        }
        if global {
            line(io.out, format!("Triggered global unit {} {verb}", u.name));
        } else if blocking.attempts.is_none() {
            line(io.out, format!("Triggered unit {} {verb}", u.name));
        } else {
            waited.push(u.name.clone());
        }
    }
    if !waited.is_empty() {
        let code = wait_for(api, io, &waited, Target::Current(want), blocking).await;
        if code != 0 {
            return code;
        }
    }
    let names: Vec<_> = found.iter().map(|u| u.name.as_str()).collect();
    line(
        io.err,
        format!("Successfully {done} units [{}].", names.join(" ")),
    );
    0
}

/// `destroy`.
pub async fn destroy<A: FleetApi>(api: &A, io: &mut Io<'_>, args: &[String]) -> i32 {
    if args.is_empty() {
        line(io.err, "No units given");
        return 0;
    }
    let mut any = false;
    for arg in args {
        let name = fleet_mangle_name(arg);
        match api.destroy(&name).await {
            Ok(true) => {
                any = true;
                line(io.out, format!("Destroyed {name}"));
            }
            Ok(false) => {}
            Err(e) => {
                line(io.err, format!("Error destroying units: {e}"));
                return 1;
            }
        }
    }
    if !any {
        line(io.err, "Units not found in registry");
    }
    0
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
            line(io.err, format!("Error retrieving Unit({name}): {e}"));
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

/// `list-units`: one row per published unit state.
pub async fn list_units<A: FleetApi>(api: &A, io: &mut Io<'_>, opts: &ListOptions) -> i32 {
    let f = match fields::parse_fields(&opts.fields, &fields::UNIT_STATE_FIELDS) {
        Ok(f) => f,
        Err(e) => {
            line(io.err, e.to_string());
            return 1;
        }
    };
    let (states, machines) = match futures::try_join!(api.states(), api.machines()) {
        Ok(x) => x,
        Err(e) => {
            line(
                io.err,
                format!("Error retrieving list of units from repository: {e}"),
            );
            return 1;
        }
    };
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
    let f = match fields::parse_fields(&opts.fields, &fields::UNIT_FILE_FIELDS) {
        Ok(f) => f,
        Err(e) => {
            line(io.err, e.to_string());
            return 1;
        }
    };
    if f.iter().any(|x| x == "tmachine") {
        line(
            io.err,
            "WARNING: The \"tmachine\" field is deprecated. Use \"target\" instead",
        );
    }
    let (units, machines) = match futures::try_join!(api.units(), api.machines()) {
        Ok(x) => x,
        Err(e) => {
            line(
                io.err,
                format!("Error retrieving list of units from repository: {e}"),
            );
            return 1;
        }
    };
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
    let f = match fields::parse_fields(&opts.fields, &fields::MACHINE_FIELDS) {
        Ok(f) => f,
        Err(e) => {
            line(io.err, e.to_string());
            return 1;
        }
    };
    let machines = match api.machines().await {
        Ok(m) => m,
        Err(e) => {
            line(
                io.err,
                format!("Error retrieving list of active machines from fleet API ({e})"),
            );
            line(io.err, "Possible issues:");
            line(io.err, "  - fleetd is not running");
            line(
                io.err,
                "  - the endpoint (--endpoint or FLEETCTL_ENDPOINT) is wrong",
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
            assert_eq!(
                Blocking::from_flags(no_block, n).attempts,
                want,
                "{no_block} {n}"
            );
        }
    }
}
