//! [`SystemdDriver`]: systemd itself, over D-Bus, the way fleet's agent drives it.
//!
//! * load: write the unit file into a runtime units directory, `LinkUnitFiles` (runtime,
//!   force), `EnableUnitFiles` (runtime) when the file has an `[Install]` section, then one
//!   `Reload` (daemon-reload) per batch ([`UnitDriver::load_all`]).
//! * start/stop/reload: `StartUnit`/`StopUnit`/`ReloadUnit` with mode `replace`.
//! * unload: stop; only if that succeeded, disable, `ResetFailedUnit`, remove the file, reload.
//! * states: `ListUnitsByNames`, refreshed on `PropertiesChanged` signals of the units we
//!   loaded (after `Manager.Subscribe`) and by a slow poll that catches anything missed.
//! * logs: `journalctl -o json` (with `-f` to follow) on the unit's journal fields.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use unit_parser::name::UnitName;
use zbus::Connection;
use zbus::zvariant::{DynamicType, OwnedObjectPath, OwnedValue, Value};

use crate::UnitDriver;
use crate::error::{Error, Result};
use crate::log::{LogLine, LogOptions, LogStream};
use crate::state::{
    ActiveState, Broadcaster, LoadState, ServiceResult, Subscription, UnitState, UnitStatus,
};

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// Whether this host was booted with systemd as its init (`sd_booted()`: the directory
/// `/run/systemd/system` exists), i.e. whether [`SystemdDriver`] with the system manager
/// is the driver to use rather than the native [`ProcessDriver`](crate::ProcessDriver).
pub fn booted_with_systemd() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// Which systemd instance to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instance {
    /// The system manager (PID 1), on the system bus.
    System,
    /// A user manager (`systemd --user`), on the session bus.
    User,
}

/// Settings of a [`SystemdDriver`].
#[derive(Debug, Clone)]
pub struct SystemdDriverConfig {
    /// System or user manager.
    pub instance: Instance,
    /// The bus to connect to; `None` for the instance's usual bus
    /// (`DBUS_SYSTEM_BUS_ADDRESS`/the system socket, or `DBUS_SESSION_BUS_ADDRESS`).
    pub bus_address: Option<String>,
    /// Where unit files are written before being linked (fleet: `/run/fleet/units`).
    pub units_dir: PathBuf,
    /// Read the journal from this directory (`journalctl -D`) instead of the default.
    pub journal_dir: Option<PathBuf>,
    /// How often all states are re-read, in case a signal was missed (fleet polls every second).
    pub poll_interval: Duration,
}

impl SystemdDriverConfig {
    /// fleet's defaults for the system manager: units in `/run/fleet/units`.
    pub fn system() -> Self {
        SystemdDriverConfig {
            instance: Instance::System,
            bus_address: None,
            units_dir: PathBuf::from("/run/fleet/units"),
            journal_dir: None,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// A user manager, with units in `$XDG_RUNTIME_DIR/flotilla/units`.
    pub fn user() -> Self {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        SystemdDriverConfig {
            instance: Instance::User,
            units_dir: runtime.join("flotilla/units"),
            ..Self::system()
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Known {
    path: Option<String>,
    state: Option<UnitState>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    cfg: SystemdDriverConfig,
    known: Mutex<BTreeMap<String, Known>>,
    events: Broadcaster,
    watcher: Mutex<Option<AbortHandle>>,
    version: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.lock().expect("watcher lock").take() {
            w.abort();
        }
    }
}

/// systemd over D-Bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SystemdDriver {
    inner: Arc<Inner>,
}

fn dbus(method: &str) -> impl FnOnce(zbus::Error) -> Error + '_ {
    move |e| Error::Dbus {
        method: method.to_owned(),
        source: Box::new(e),
    }
}

/// The changes `LinkUnitFiles`/`EnableUnitFiles`/`DisableUnitFiles` report: (type, file, target).
type Changes = Vec<(String, String, String)>;

/// One row of `ListUnitsByNames`.
type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

impl SystemdDriver {
    /// Connects to the manager, subscribes to its signals and starts watching states.
    ///
    /// # Errors
    /// When the bus or the manager cannot be reached, or the units directory not created.
    pub async fn connect(cfg: SystemdDriverConfig) -> Result<SystemdDriver> {
        let conn = match (&cfg.bus_address, cfg.instance) {
            (Some(addr), _) => zbus::connection::Builder::address(addr.as_str())
                .map_err(dbus("connect"))?
                .build()
                .await
                .map_err(dbus("connect"))?,
            (None, Instance::System) => Connection::system()
                .await
                .map_err(dbus("connect to the system bus"))?,
            (None, Instance::User) => Connection::session()
                .await
                .map_err(dbus("connect to the session bus"))?,
        };
        std::fs::create_dir_all(&cfg.units_dir)
            .map_err(|e| Error::io("create units directory", &cfg.units_dir, e))?;
        let version: OwnedValue = call(
            &conn,
            MANAGER_PATH,
            PROPERTIES,
            "Get",
            &(MANAGER, "Version"),
        )
        .await?;
        let version = value_str(&version).unwrap_or_else(|| format!("{version:?}"));
        let () = call(&conn, MANAGER_PATH, MANAGER, "Subscribe", &()).await?;
        let inner = Arc::new(Inner {
            conn,
            cfg,
            known: Mutex::new(BTreeMap::new()),
            events: Broadcaster::new(),
            watcher: Mutex::new(None),
            version,
        });
        let driver = SystemdDriver { inner };
        driver.start_watcher().await?;
        Ok(driver)
    }

    /// The manager's version string (e.g. `252.38-1~deb12u1`).
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    async fn start_watcher(&self) -> Result<()> {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(PROPERTIES)
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| b.path_namespace("/org/freedesktop/systemd1/unit"))
            .map_err(dbus("match rule"))?
            .build();
        let mut stream = zbus::MessageStream::for_match_rule(rule, &self.inner.conn, Some(1024))
            .await
            .map_err(dbus("AddMatch"))?;
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.cfg.poll_interval;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                let which = tokio::select! {
                    msg = stream.next() => match msg {
                        Some(Ok(m)) => m.header().path().map(|p| p.as_str().to_owned()),
                        Some(Err(_)) => continue,
                        None => return,
                    },
                    _ = tick.tick() => None,
                };
                let Some(inner) = weak.upgrade() else { return };
                let driver = SystemdDriver { inner };
                let names: Vec<String> = {
                    let known = driver.inner.known.lock().expect("known lock");
                    match &which {
                        Some(path) => known
                            .iter()
                            .filter(|(_, k)| k.path.as_deref() == Some(path.as_str()))
                            .map(|(n, _)| n.clone())
                            .collect(),
                        None => known.keys().cloned().collect(),
                    }
                };
                if !names.is_empty() {
                    let _ = driver.refresh(&names).await;
                }
            }
        });
        *self.inner.watcher.lock().expect("watcher lock") = Some(task.abort_handle());
        Ok(())
    }

    async fn manager<R>(
        &self,
        method: &str,
        body: &(impl serde::Serialize + DynamicType),
    ) -> Result<R>
    where
        R: DeserializeOwned + zbus::zvariant::Type,
    {
        call(&self.inner.conn, MANAGER_PATH, MANAGER, method, body).await
    }

    /// Reads the states of `names` and publishes those that changed.
    async fn refresh(&self, names: &[String]) -> Result<Vec<UnitRow>> {
        let rows: Vec<UnitRow> = self.manager("ListUnitsByNames", &(names,)).await?;
        for row in &rows {
            let state = row_state(row);
            let changed = {
                let mut known = self.inner.known.lock().expect("known lock");
                match known.get_mut(&row.0) {
                    Some(k) => {
                        k.path = Some(row.6.as_str().to_owned());
                        let changed = k.state.as_ref() != Some(&state);
                        k.state = Some(state.clone());
                        changed
                    }
                    None => false,
                }
            };
            if changed {
                self.inner.events.send(&row.0, Some(state));
            }
        }
        Ok(rows)
    }

    async fn service_props(&self, path: &str) -> (Option<u32>, ServiceResult, Option<String>) {
        let props: Result<HashMap<String, OwnedValue>> = call(
            &self.inner.conn,
            path,
            PROPERTIES,
            "GetAll",
            &("org.freedesktop.systemd1.Service",),
        )
        .await;
        let Ok(props) = props else {
            return (None, ServiceResult::Success, None);
        };
        let main = props
            .get("MainPID")
            .and_then(|v| value_u32(v))
            .filter(|&n| n > 0);
        let text = |k: &str| {
            props
                .get(k)
                .and_then(|v| value_str(v))
                .filter(|s| !s.is_empty())
        };
        (
            main,
            text("Result").map_or(ServiceResult::Success, |r| ServiceResult::parse(&r)),
            text("StatusText"),
        )
    }

    async fn status_of(&self, row: &UnitRow) -> UnitStatus {
        let (main_pid, result, status_text) = if row.0.ends_with(".service") {
            self.service_props(row.6.as_str()).await
        } else {
            (None, ServiceResult::Success, None)
        };
        UnitStatus {
            name: row.0.clone(),
            state: row_state(row),
            main_pid,
            result,
            status_text,
        }
    }

    fn unit_path(&self, name: &str) -> PathBuf {
        self.inner.cfg.units_dir.join(name)
    }

    fn is_known(&self, name: &str) -> Result<()> {
        if self
            .inner
            .known
            .lock()
            .expect("known lock")
            .contains_key(name)
        {
            Ok(())
        } else {
            Err(Error::NotLoaded(name.to_owned()))
        }
    }

    /// Writes, links (and enables) the units, without reloading.
    async fn install(&self, name: &str, contents: &str) -> Result<()> {
        check_unit_name(name)?;
        let path = self.unit_path(name);
        let tmp = path.with_extension("flotilla-tmp");
        std::fs::write(&tmp, contents)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io("write unit file", &path, e))?;
        let file = path.to_string_lossy().into_owned();
        let _: Changes = self
            .manager("LinkUnitFiles", &(vec![file.as_str()], true, true))
            .await?;
        if has_install_section(contents) {
            let enabled: Result<(bool, Changes)> = self
                .manager("EnableUnitFiles", &(vec![name], true, true))
                .await;
            if let Err(e) = enabled {
                // As fleet: a unit that cannot be enabled is not loaded.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        }
        self.inner
            .known
            .lock()
            .expect("known lock")
            .entry(name.to_owned())
            .or_default();
        Ok(())
    }

    /// Stops, disables, resets and removes one unit, without reloading. `false` when there
    /// was nothing to remove.
    async fn uninstall(&self, name: &str) -> Result<bool> {
        if self.is_known(name).is_err() && !self.unit_path(name).exists() {
            return Ok(false);
        }
        // As fleet (issue #1216): only a unit that could be stopped is disabled and removed.
        let _: OwnedObjectPath = self.manager("StopUnit", &(name, "replace")).await?;
        let disabled: Result<Changes> = self.manager("DisableUnitFiles", &(vec![name], true)).await;
        if let Err(e) = disabled {
            tracing::debug!(unit = name, "DisableUnitFiles: {e}");
        }
        let reset: Result<()> = self.manager("ResetFailedUnit", &(name,)).await;
        if let Err(e) = reset {
            tracing::debug!(unit = name, "ResetFailedUnit: {e}");
        }
        let path = self.unit_path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove unit file", path, e)),
        }
        Ok(true)
    }

    /// After a reload: a unit systemd could not load is rolled back and reported.
    async fn check_loaded(&self, names: &[String]) -> Result<()> {
        let rows = self.refresh(names).await?;
        for row in rows {
            let load = LoadState::parse(&row.2);
            if load != Some(LoadState::Loaded) {
                let _ = self.unload(&row.0).await;
                return Err(Error::bad_unit(
                    &row.0,
                    0,
                    format!("systemd reports load state {:?}", row.2),
                ));
            }
        }
        Ok(())
    }

    /// The unit's journal cgroup, for hosts where journald cannot tell the unit name (a
    /// user manager outside a login session).
    async fn journal_cgroup(&self, name: &str) -> Option<String> {
        let root: OwnedValue = call(
            &self.inner.conn,
            MANAGER_PATH,
            PROPERTIES,
            "Get",
            &(MANAGER, "ControlGroup"),
        )
        .await
        .ok()?;
        let root = value_str(&root)?;
        let path = self
            .inner
            .known
            .lock()
            .expect("known lock")
            .get(name)?
            .path
            .clone()?;
        // Slice= lives on the type's interface (org.freedesktop.systemd1.Service, ...).
        let suffix = name.rsplit_once('.')?.1;
        let iface = format!(
            "org.freedesktop.systemd1.{}{}",
            suffix[..1].to_ascii_uppercase(),
            &suffix[1..]
        );
        let slice: OwnedValue = call(
            &self.inner.conn,
            &path,
            PROPERTIES,
            "Get",
            &(iface.as_str(), "Slice"),
        )
        .await
        .ok()?;
        let slice = value_str(&slice)?;
        Some(format!(
            "{}/{}/{name}",
            root.trim_end_matches('/'),
            slice_path(&slice)
        ))
    }
}

/// A string property, however deeply the variant wraps it.
fn value_str(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.as_str().to_owned()),
        Value::Value(inner) => value_str(inner),
        _ => None,
    }
}

fn value_u32(v: &Value<'_>) -> Option<u32> {
    match v {
        Value::U32(n) => Some(*n),
        Value::Value(inner) => value_u32(inner),
        _ => None,
    }
}

/// `a-b.slice` lives in `a.slice/a-b.slice`; `-.slice` is the root.
fn slice_path(slice: &str) -> String {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return slice.to_owned();
    };
    if stem == "-" || stem.is_empty() {
        return String::new();
    }
    let parts: Vec<&str> = stem.split('-').collect();
    (1..=parts.len())
        .map(|i| format!("{}.slice", parts[..i].join("-")))
        .collect::<Vec<_>>()
        .join("/")
}

fn row_state(row: &UnitRow) -> UnitState {
    UnitState::new(
        LoadState::parse(&row.2).unwrap_or(LoadState::Error),
        ActiveState::parse(&row.3).unwrap_or(ActiveState::Failed),
        row.4.clone(),
    )
}

async fn call<R>(
    conn: &Connection,
    path: &str,
    interface: &str,
    method: &str,
    body: &(impl serde::Serialize + DynamicType),
) -> Result<R>
where
    R: DeserializeOwned + zbus::zvariant::Type,
{
    let msg = conn
        .call_method(Some(DEST), path, Some(interface), method, body)
        .await
        .map_err(dbus(method))?;
    msg.body().deserialize::<R>().map_err(dbus(method))
}

/// systemd's rules for a unit name (any type: this driver hands every unit to systemd).
fn check_unit_name(name: &str) -> Result<()> {
    UnitName::parse(name)
        .map(drop)
        .map_err(|e| Error::invalid_name(name, e))
}

fn has_install_section(contents: &str) -> bool {
    contents.lines().any(|l| l.trim() == "[Install]")
}

impl UnitDriver for SystemdDriver {
    async fn load(&self, name: &str, contents: &str) -> Result<()> {
        self.load_all(&[(name.to_owned(), contents.to_owned())])
            .await
    }

    async fn load_all(&self, units: &[(String, String)]) -> Result<()> {
        for (name, contents) in units {
            self.install(name, contents).await?;
        }
        let () = self.manager("Reload", &()).await?;
        let names: Vec<String> = units.iter().map(|(n, _)| n.clone()).collect();
        self.check_loaded(&names).await
    }

    async fn start(&self, name: &str) -> Result<()> {
        self.is_known(name)?;
        let _: OwnedObjectPath = self.manager("StartUnit", &(name, "replace")).await?;
        Ok(())
    }

    async fn stop(&self, name: &str) -> Result<()> {
        self.is_known(name)?;
        let _: OwnedObjectPath = self.manager("StopUnit", &(name, "replace")).await?;
        Ok(())
    }

    async fn reload(&self, name: &str) -> Result<()> {
        self.is_known(name)?;
        let _: OwnedObjectPath = self.manager("ReloadUnit", &(name, "replace")).await?;
        Ok(())
    }

    async fn unload(&self, name: &str) -> Result<()> {
        self.unload_all(&[name.to_owned()]).await
    }

    async fn unload_all(&self, names: &[String]) -> Result<()> {
        let mut removed = Vec::new();
        let mut result = Ok(());
        for name in names {
            match self.uninstall(name).await {
                Ok(true) => removed.push(name.as_str()),
                Ok(false) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if !removed.is_empty() {
            // One daemon-reload for the whole batch.
            let () = self.manager("Reload", &()).await?;
            for name in removed {
                if self
                    .inner
                    .known
                    .lock()
                    .expect("known lock")
                    .remove(name)
                    .is_some()
                {
                    self.inner.events.send(name, None);
                }
            }
        }
        result
    }

    async fn list(&self) -> Result<Vec<UnitStatus>> {
        let names: Vec<String> = self
            .inner
            .known
            .lock()
            .expect("known lock")
            .keys()
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.refresh(&names).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.status_of(row).await);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn status(&self, name: &str) -> Result<UnitStatus> {
        if self.is_known(name).is_err() {
            return Ok(UnitStatus {
                name: name.to_owned(),
                state: UnitState::new(LoadState::NotFound, ActiveState::Inactive, "dead"),
                main_pid: None,
                result: ServiceResult::Success,
                status_text: None,
            });
        }
        let rows = self.refresh(&[name.to_owned()]).await?;
        let row = rows
            .first()
            .ok_or_else(|| Error::NotLoaded(name.to_owned()))?;
        Ok(self.status_of(row).await)
    }

    async fn subscribe(&self) -> Result<Subscription> {
        Ok(self.inner.events.subscribe())
    }

    async fn logs(&self, name: &str, opts: LogOptions) -> Result<LogStream> {
        check_unit_name(name)?;
        let mut cmd = tokio::process::Command::new("journalctl");
        cmd.args(["-o", "json", "--no-pager", "--output-fields=MESSAGE"]);
        if let Some(dir) = &self.inner.cfg.journal_dir {
            cmd.arg("-D").arg(dir);
        }
        match opts.lines {
            Some(n) => cmd.arg(format!("--lines={n}")),
            None => cmd.arg("--lines=all"),
        };
        if opts.follow {
            cmd.arg("--follow");
        }
        cmd.arg(format!("_SYSTEMD_UNIT={name}"))
            .arg("+")
            .arg(format!("_SYSTEMD_USER_UNIT={name}"));
        if let Some(cg) = self.journal_cgroup(name).await {
            cmd.arg("+").arg(format!("_SYSTEMD_CGROUP={cg}"));
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| Error::Journal {
            unit: name.to_owned(),
            message: format!("cannot run journalctl: {e}"),
        })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Journal {
            unit: name.to_owned(),
            message: "journalctl has no output pipe".into(),
        })?;
        let (tx, rx) = mpsc::channel(1024);
        let unit = name.to_owned();
        let task = tokio::spawn(async move {
            // The child is killed when this task ends or is aborted (kill_on_drop).
            let _child = child;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let message = match entry.get("MESSAGE") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    // Non-UTF-8 messages come as arrays of bytes.
                    Some(serde_json::Value::Array(bytes)) => {
                        let b: Vec<u8> = bytes
                            .iter()
                            .filter_map(|v| v.as_u64().map(|n| n as u8))
                            .collect();
                        String::from_utf8_lossy(&b).into_owned()
                    }
                    _ => continue,
                };
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
        });
        Ok(LogStream::new(rx, Some(task.abort_handle())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_names() {
        assert_eq!(slice_path("app.slice"), "app.slice");
        assert_eq!(slice_path("a-b-c.slice"), "a.slice/a-b.slice/a-b-c.slice");
        assert_eq!(slice_path("-.slice"), "");
        assert!(check_unit_name("a.service").is_ok());
        assert!(check_unit_name("a.timer").is_ok());
        assert!(check_unit_name("a.bogus").is_err());
        assert!(check_unit_name("../a.service").is_err());
        assert_eq!(
            check_unit_name("a b.service").unwrap_err().to_string(),
            "invalid unit name \"a b.service\": unit name \"a b.service\" contains invalid character ' ' at byte 1"
        );
        assert!(has_install_section(
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=default.target\n"
        ));
    }
}
