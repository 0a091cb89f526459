//! fleetd's configuration: fleet 1.0's `fleet.conf` keys, their `FLEET_*` environment
//! variables and `--key=value` flags (fleet.md §6.8), plus what Flotilla adds (the embedded
//! store, the API listeners).
//!
//! Precedence, lowest first: defaults, the config file, the environment, flags. Every error
//! names where the bad value came from (`fleet.conf line 3`, `FLEET_AGENT_TTL`,
//! `--agent_ttl`) and what was wrong with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// fleet 1.0's default config file, read when it exists and no other is given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/fleet/fleet.conf";

/// A configuration value that cannot be used, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// A line of the config file is not `key = value`.
    #[error("{origin}: expected `key = value`, found {line:?}")]
    Syntax {
        /// File and line.
        origin: String,
        /// The line.
        line: String,
    },
    /// A key fleetd does not know.
    #[error("{origin}: unknown option {key:?}")]
    UnknownKey {
        /// File and line, variable or flag.
        origin: String,
        /// The key.
        key: String,
    },
    /// A value that does not parse for its key.
    #[error("{origin}: invalid value {value:?} for {key}: {detail}")]
    BadValue {
        /// File and line, variable or flag.
        origin: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// fleetd's configuration. Field names are fleet's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `verbosity`: above 0, debug logging.
    pub verbosity: u32,
    /// `etcd_servers`: the store's client URLs. Empty means the embedded store.
    pub etcd_servers: Vec<String>,
    /// `etcd_key_prefix`: the registry's prefix.
    pub etcd_key_prefix: String,
    /// `etcd_request_timeout`.
    pub etcd_request_timeout: Duration,
    /// `etcd_cafile`: CA for an https store.
    pub etcd_cafile: Option<PathBuf>,
    /// `etcd_certfile`: client certificate for an https store.
    pub etcd_certfile: Option<PathBuf>,
    /// `etcd_keyfile`: client key for an https store.
    pub etcd_keyfile: Option<PathBuf>,
    /// `engine_reconcile_interval`.
    pub engine_reconcile_interval: Duration,
    /// `public_ip`: the IP published for this machine (detected when empty).
    pub public_ip: Option<String>,
    /// `metadata`: `k=v,k2=v2`.
    pub metadata: BTreeMap<String, String>,
    /// `agent_ttl`: presence, unit state and heartbeat TTL.
    pub agent_ttl: Duration,
    /// `units_directory`: where the systemd driver writes unit files.
    pub units_directory: PathBuf,
    /// `systemd_user`: drive the user's systemd instead of the system's.
    pub systemd_user: bool,
    /// `token_limit`: the API's page size.
    pub token_limit: u16,
    /// `disable_engine`: never take part in engine leader election.
    pub disable_engine: bool,
    /// `disable_watches`: accepted for compatibility; Flotilla always watches.
    pub disable_watches: bool,
    /// `machine_id`: this machine's ID (default: `/etc/machine-id`). Flotilla's addition,
    /// so several machines can run on one host.
    pub machine_id: Option<String>,
    /// `api_socket`: the API's unix socket (empty: none).
    pub api_socket: Option<PathBuf>,
    /// `api_listen`: the API's TCP address (empty: none).
    pub api_listen: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            verbosity: 0,
            etcd_servers: Vec::new(),
            etcd_key_prefix: crate::registry::DEFAULT_PREFIX.to_owned(),
            etcd_request_timeout: Duration::from_secs(1),
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            engine_reconcile_interval: Duration::from_secs(2),
            public_ip: None,
            metadata: BTreeMap::new(),
            agent_ttl: Duration::from_secs(30),
            units_directory: PathBuf::from("/run/fleet/units/"),
            systemd_user: false,
            token_limit: 100,
            disable_engine: false,
            disable_watches: false,
            machine_id: None,
            api_socket: Some(PathBuf::from("/var/run/fleet.sock")),
            api_listen: None,
        }
    }
}

/// Every key fleetd reads (fleet's, then Flotilla's), as file keys, `FLEET_<KEY>`
/// variables and `--<key>` flags.
pub const KEYS: [&str; 24] = [
    "verbosity",
    "etcd_servers",
    "etcd_key_prefix",
    "etcd_request_timeout",
    "etcd_cafile",
    "etcd_certfile",
    "etcd_keyfile",
    "etcd_username",
    "etcd_password",
    "engine_reconcile_interval",
    "public_ip",
    "metadata",
    "agent_ttl",
    "units_directory",
    "systemd_user",
    "token_limit",
    "disable_engine",
    "disable_watches",
    "verify_units",
    "authorized_keys_file",
    "enable_grpc",
    "machine_id",
    "api_socket",
    "api_listen",
];

/// Keys fleet 1.0 accepts but no longer acts on: logged, not refused.
const DEPRECATED_KEYS: [&str; 3] = ["verify_units", "authorized_keys_file", "enable_grpc"];

impl Config {
    /// The configuration from fleet's sources: `file` (or [`DEFAULT_CONFIG_FILE`] when it
    /// exists), then `env` (`FLEET_<KEY>` variables), then `flags` (`(key, value)` pairs
    /// from `--key=value`). Returns the keys given that are deprecated, for a warning.
    ///
    /// # Errors
    /// [`ConfigError`] naming the source of the first bad value.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(String, String)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut config = Config::default();
        let mut deprecated = Vec::new();
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            for (n, line) in text.lines().enumerate() {
                let trimmed = line.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                    continue;
                }
                let origin = format!("{} line {}", path.display(), n + 1);
                let Some((k, v)) = trimmed.split_once('=') else {
                    return Err(ConfigError::Syntax {
                        origin,
                        line: line.to_owned(),
                    });
                };
                config.set(k.trim(), unquote(v.trim()), &origin, &mut deprecated)?;
            }
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("FLEET_"))
            .collect();
        env.sort();
        for (var, value) in env {
            let key = var["FLEET_".len()..].to_ascii_lowercase();
            if !is_key(&key) {
                // Other FLEET_* variables (fleetctl's, the user's) are not ours to refuse.
                continue;
            }
            config.set(&key, &value, &var, &mut deprecated)?;
        }
        for (key, value) in flags {
            config.set(key, value, &format!("--{key}"), &mut deprecated)?;
        }
        Ok((config, deprecated))
    }

    /// Sets one key from its text.
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] or [`ConfigError::BadValue`], naming `origin`.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        origin: &str,
        deprecated: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let bad = |detail: String| ConfigError::BadValue {
            origin: origin.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            detail,
        };
        let path = |v: &str| (!v.is_empty()).then(|| PathBuf::from(v));
        match key {
            "verbosity" => {
                self.verbosity = value.parse().map_err(|e| bad(format!("{e}")))?;
            }
            "etcd_servers" => self.etcd_servers = parse_list(value),
            "etcd_key_prefix" => {
                if !value.starts_with('/') {
                    return Err(bad("must start with /".into()));
                }
                self.etcd_key_prefix = value.to_owned();
            }
            "etcd_request_timeout" => {
                self.etcd_request_timeout = parse_seconds(value).map_err(bad)?
            }
            "etcd_cafile" => self.etcd_cafile = path(value),
            "etcd_certfile" => self.etcd_certfile = path(value),
            "etcd_keyfile" => self.etcd_keyfile = path(value),
            "etcd_username" | "etcd_password" => {
                if !value.is_empty() {
                    return Err(bad("etcd authentication is not supported".into()));
                }
            }
            "engine_reconcile_interval" => {
                self.engine_reconcile_interval = parse_seconds(value).map_err(bad)?;
                if self.engine_reconcile_interval.is_zero() {
                    return Err(bad("must be positive".into()));
                }
            }
            "public_ip" => self.public_ip = (!value.is_empty()).then(|| value.to_owned()),
            "metadata" => self.metadata = parse_metadata(value),
            "agent_ttl" => {
                let ttl = parse_duration(value).map_err(bad)?;
                if ttl < Duration::from_secs(1) {
                    return Err(bad(
                        "must be at least 1s (store TTLs are whole seconds)".into()
                    ));
                }
                self.agent_ttl = ttl;
            }
            "units_directory" => self.units_directory = PathBuf::from(value),
            "systemd_user" => self.systemd_user = parse_bool(value).map_err(bad)?,
            "token_limit" => {
                let n: u16 = value.parse().map_err(|e| bad(format!("{e}")))?;
                if n == 0 {
                    return Err(bad("must be positive".into()));
                }
                self.token_limit = n;
            }
            "disable_engine" => self.disable_engine = parse_bool(value).map_err(bad)?,
            "disable_watches" => self.disable_watches = parse_bool(value).map_err(bad)?,
            "machine_id" => self.machine_id = (!value.is_empty()).then(|| value.to_owned()),
            "api_socket" => self.api_socket = path(value),
            "api_listen" => self.api_listen = (!value.is_empty()).then(|| value.to_owned()),
            k if DEPRECATED_KEYS.contains(&k) => deprecated.push(k.to_owned()),
            _ => {
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_owned(),
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The agent TTL in whole seconds, as the store takes it.
    pub fn agent_ttl_secs(&self) -> u64 {
        self.agent_ttl.as_secs().max(1)
    }
}

/// Whether fleetd has an option of this name.
pub fn is_key(key: &str) -> bool {
    KEYS.contains(&key)
}

/// Takes fleet's `--<key>=<value>` and `--<key> <value>` flags out of `args`, leaving the
/// rest (fleetd's own flags, the embedded store's) in order.
pub fn take_key_flags(args: &mut Vec<String>) -> Vec<(String, String)> {
    let mut flags = Vec::new();
    let mut rest = Vec::with_capacity(args.len());
    let mut it = std::mem::take(args).into_iter();
    while let Some(a) = it.next() {
        let Some(body) = a.strip_prefix("--") else {
            rest.push(a);
            continue;
        };
        let (key, inline) = match body.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (body.to_owned(), None),
        };
        if !is_key(&key) {
            rest.push(a);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().unwrap_or_default(),
        };
        flags.push((key, value));
    }
    *args = rest;
    flags
}

/// Strips one pair of matching quotes, as fleet's config reader does.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// fleet's string list: comma-separated, brackets and quotes tolerated
/// (`["http://a:2379","http://b:2379"]`).
pub fn parse_list(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| {
            s.trim()
                .trim_matches('"')
                .trim_matches('\'')
                .trim()
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// fleet's metadata: `k=v,k2=v2`, spaces trimmed, pairs without `=` dropped, later
/// duplicates win (fleet's `TestConfigMetadata`).
pub fn parse_metadata(v: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in v.split(',') {
        if let Some((k, val)) = pair.split_once('=') {
            let (k, val) = (k.trim(), val.trim());
            if !k.is_empty() {
                out.insert(k.to_owned(), val.to_owned());
            }
        }
    }
    out
}

/// A Go-style duration (`30s`, `1m30s`, `500ms`, `1.5h`), read with systemd's time span
/// rules (a superset); a bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let span = unit_parser::value::parse_sec(v).map_err(|e| e.to_string())?;
    span.duration().ok_or_else(|| "must be finite".to_owned())
}

/// Seconds as a float (`1.0`, `2.5`), as fleet's `etcd_request_timeout` and
/// `engine_reconcile_interval` are given; a duration with a unit is accepted too.
fn parse_seconds(v: &str) -> Result<Duration, String> {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err("must be a non-negative number of seconds".into()),
        Err(_) => parse_duration(v),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.conf");
        std::fs::write(
            &file,
            "# fleet.conf\nagent_ttl = \"10s\"\nmetadata=region=us-east, disk = ssd\netcd_servers=[\"http://a:2379\",\"http://b:2379\"]\nverify_units=true\n",
        )
        .unwrap();
        let (c, deprecated) = Config::load(
            Some(&file),
            env(&[
                ("FLEET_AGENT_TTL", "20s"),
                ("FLEETCTL_ENDPOINT", "x"),
                ("FLEET_OTHER", "y"),
            ]),
            &[("agent_ttl".into(), "1m30s".into())],
        )
        .unwrap();
        assert_eq!(c.agent_ttl, Duration::from_secs(90));
        assert_eq!(c.etcd_servers, ["http://a:2379", "http://b:2379"]);
        assert_eq!(c.metadata["region"], "us-east");
        assert_eq!(c.metadata["disk"], "ssd");
        assert_eq!(deprecated, ["verify_units"]);
    }

    #[test]
    fn errors_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.conf");
        std::fs::write(&file, "agent_ttl=30s\n\nnonsense\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fleet.conf line 3") && e.contains("nonsense"),
            "{e}"
        );

        std::fs::write(&file, "agent_tll=30s\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("agent_tll"), "{e}");

        let e = Config::load(None, env(&[("FLEET_AGENT_TTL", "soon")]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("FLEET_AGENT_TTL: invalid value \"soon\" for agent_ttl"),
            "{e}"
        );

        let e = Config::load(None, env(&[]), &[("token_limit".into(), "0".into())])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--token_limit:"), "{e}");

        let missing = dir.path().join("missing.conf");
        let e = Config::load(Some(&missing), env(&[]), &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn key_flags_are_taken_out() {
        let mut args: Vec<String> = [
            "fleetd",
            "--agent_ttl=5s",
            "--name",
            "m1",
            "--metadata",
            "a=b",
            "--data-dir",
            "/x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let flags = take_key_flags(&mut args);
        assert_eq!(
            flags,
            [
                ("agent_ttl".to_string(), "5s".to_string()),
                ("metadata".to_string(), "a=b".to_string())
            ]
        );
        assert_eq!(args, ["fleetd", "--name", "m1", "--data-dir", "/x"]);
        for k in KEYS {
            let mut c = Config::default();
            let r = c.set(k, "", "test", &mut Vec::new());
            assert!(!matches!(r, Err(ConfigError::UnknownKey { .. })), "{k}");
        }
    }

    #[test]
    fn fleet_value_formats() {
        assert_eq!(
            parse_metadata("a=1, b = 2,c,=x,a=3"),
            [
                ("a".to_string(), "3".to_string()),
                ("b".to_string(), "2".to_string())
            ]
            .into()
        );
        assert_eq!(parse_list("a, b"), ["a", "b"]);
        assert_eq!(parse_list("['a']"), ["a"]);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h45m").unwrap(), Duration::from_secs(9900));
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_bool("yes").is_err());
    }
}
