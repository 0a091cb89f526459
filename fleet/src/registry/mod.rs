//! fleet's registry: its key layout and values ([`keys`], [`model`]) over a [`KvStore`].
//!
//! [`Registry`] turns fleet's concepts (units and their jobs, machines and their presence,
//! published unit states, the engine's lease) into store operations and back. It keeps
//! nothing but a cache of unit contents, which are immutable and content-addressed, so a
//! unit file is fetched and parsed once per process however many units share it.
//!
//! Engine writes are *fenced*: [`Registry::schedule`] and [`Registry::unschedule`] take the
//! [`Fence`] of the lease the engine holds, and on a store with transactions the write runs
//! only if that very lease (same key, creation index and holder) still exists, so an
//! engine that was paused past its lease can never write a schedule. On a plain etcd (no
//! transactions) the fence is checked by a read just before the write, as fleet 1.0 did.

pub mod keys;
pub mod model;
mod unit;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kv_core::{Compare, CompareTarget, Event, NodeView, Op, Txn};
use unit_parser::hash::UnitHash;

pub use keys::{DEFAULT_PREFIX, KeyKind, Keys};
pub use model::{CapacityRecord, JobObject, LeaseRecord, MachineRecord, UnitBlob, UnitStateRecord};
pub use unit::{ContentsError, JobState, Unit, UnitContents};

use crate::store::{KvStore, StoreError, Watch};

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The store failed or refused the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value in the registry is not what fleet writes there.
    #[error("registry key {key}: {detail}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong with its value.
        detail: String,
    },
    /// The lease a fenced write was made under is no longer held.
    #[error("engine lease lost: {0}")]
    Fenced(String),
}

/// The result of a registry operation.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A machine as the registry knows it: its presence record, with dynamic metadata applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The machine ID.
    pub id: String,
    /// The IP others reach it at; empty when unknown.
    pub public_ip: String,
    /// Configured metadata overlaid with dynamic metadata (an empty dynamic value removes
    /// a key).
    pub metadata: BTreeMap<String, String>,
    /// The fleet version it runs.
    pub version: String,
    /// What it offers the scheduler (unlimited when it published nothing).
    pub capacity: scheduler::Capacity,
    /// The presence record as stored.
    pub record: MachineRecord,
}

/// A unit's state as published by one machine's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedState {
    /// The unit.
    pub unit: String,
    /// The machine that published it (the key's last component).
    pub machine_id: String,
    /// The record.
    pub record: UnitStateRecord,
}

/// The engine's lease as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Holder and version.
    pub record: LeaseRecord,
    /// The store's `modifiedIndex` of the lease, for compare-and-swap renewals.
    pub modified_index: u64,
    /// The store's `createdIndex`: one per acquisition, the identity fenced writes compare.
    pub created_index: u64,
    /// Seconds left, as the store reported it.
    pub ttl: Option<i64>,
}

impl Lease {
    /// The fence of this lease.
    pub fn fence(&self, keys: &Keys) -> Fence {
        Fence {
            key: keys.engine_lease(),
            created_index: self.created_index,
            value: self.record.to_json(),
        }
    }
}

/// Proof of holding the engine's lease, attached to engine writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease key.
    pub key: String,
    /// The lease's creation index (one per acquisition).
    pub created_index: u64,
    /// The lease's value (its holder and version: a steal keeps the creation index).
    pub value: String,
}

/// Everything the engine reads to decide: units, machines, and the store index the read
/// was made at (watch from `index + 1` to follow what changes after it).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every unit, by name.
    pub units: Vec<Unit>,
    /// Every present machine, by ID.
    pub machines: Vec<Machine>,
    /// The store index of the read.
    pub index: u64,
}

/// fleet's registry over a store.
#[derive(Debug)]
pub struct Registry<S> {
    store: S,
    keys: Keys,
    contents: Mutex<HashMap<UnitHash, Arc<UnitContents>>>,
}

impl<S: KvStore> Registry<S> {
    /// The registry under fleet's default prefix.
    pub fn new(store: S) -> Registry<S> {
        Registry::with_keys(store, Keys::default())
    }

    /// The registry under another prefix (`etcd_key_prefix`).
    pub fn with_keys(store: S, keys: Keys) -> Registry<S> {
        Registry {
            store,
            keys,
            contents: Mutex::new(HashMap::new()),
        }
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Follows every change under the prefix from `since` on (see [`KvStore::watch`]).
    ///
    /// # Errors
    /// When the watch cannot be set up.
    pub async fn watch(&self, since: u64) -> Result<Watch> {
        Ok(self.store.watch(self.keys.root(), since).await?)
    }

    /// Reads a subtree; a missing key is an empty directory at the store's index.
    async fn read_dir(&self, key: &str, quorum: bool) -> Result<(Vec<NodeView>, u64)> {
        match self.store.get(key, true, quorum).await {
            Ok(e) => Ok((e.node.nodes, e.index)),
            Err(StoreError::Kv(e)) if e.code() == 100 => Ok((Vec::new(), e.index())),
            Err(e) => Err(e.into()),
        }
    }

    // ---- units ----

    /// The contents with this hash, from the cache or from `unit/<hash>`.
    ///
    /// # Errors
    /// [`RegistryError::BadValue`] when the blob is missing or does not parse.
    pub async fn contents(&self, hash: UnitHash) -> Result<Arc<UnitContents>> {
        if let Some(c) = self.contents.lock().expect("cache lock").get(&hash) {
            return Ok(c.clone());
        }
        let key = self.keys.blob(&hash.to_string());
        let e = self
            .store
            .get(&key, false, true)
            .await
            .map_err(|e| match e {
                StoreError::Kv(k) if k.code() == 100 => RegistryError::BadValue {
                    key: key.clone(),
                    detail: "unit contents missing".into(),
                },
                e => e.into(),
            })?;
        let value = e.node.value.unwrap_or_default();
        let blob: UnitBlob =
            serde_json::from_str(&value).map_err(|err| RegistryError::BadValue {
                key: key.clone(),
                detail: format!("not a unit blob: {err}"),
            })?;
        let contents =
            UnitContents::from_text(&blob.raw).map_err(|err| RegistryError::BadValue {
                key: key.clone(),
                detail: err.to_string(),
            })?;
        Ok(self.remember(contents))
    }

    /// Puts contents in the cache (keeping the copy already there, if any).
    fn remember(&self, contents: UnitContents) -> Arc<UnitContents> {
        self.contents
            .lock()
            .expect("cache lock")
            .entry(contents.hash())
            .or_insert_with(|| Arc::new(contents))
            .clone()
    }

    /// Decodes one `job/<unit>` directory. `Ok(None)` for a unit without an object (being
    /// created or destroyed).
    async fn decode_job(&self, dir: &NodeView) -> Result<Option<Unit>> {
        let name = dir.key.rsplit('/').next().unwrap_or_default().to_owned();
        let mut object = None;
        let mut desired = None;
        let mut target = None;
        let mut launched_on = None;
        for field in &dir.nodes {
            let value = field.value.as_deref().unwrap_or_default();
            match field.key.rsplit('/').next() {
                Some("object") => {
                    let o: JobObject =
                        serde_json::from_str(value).map_err(|e| RegistryError::BadValue {
                            key: field.key.clone(),
                            detail: format!("not a job object: {e}"),
                        })?;
                    object = Some(o);
                }
                Some("target-state") => {
                    desired =
                        Some(
                            value
                                .parse::<JobState>()
                                .map_err(|e| RegistryError::BadValue {
                                    key: field.key.clone(),
                                    detail: e.to_string(),
                                })?,
                        )
                }
                Some("target") if !value.is_empty() => target = Some(value.to_owned()),
                Some("job-state") if !value.is_empty() => launched_on = Some(value.to_owned()),
                _ => {}
            }
        }
        let Some(object) = object else {
            return Ok(None);
        };
        let contents = self.contents(object.hash()).await?;
        Ok(Some(Unit {
            name,
            contents,
            desired: desired.unwrap_or(JobState::Inactive),
            target,
            launched_on,
        }))
    }

    /// Every unit, in name order, and the store index of the read. Units whose records are
    /// not fleet's are left out (and logged).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn units(&self) -> Result<(Vec<Unit>, u64)> {
        let (dirs, index) = self.read_dir(&self.keys.jobs(), true).await?;
        let mut units = Vec::with_capacity(dirs.len());
        for d in &dirs {
            match self.decode_job(d).await {
                Ok(Some(u)) => units.push(u),
                Ok(None) => {}
                // One unit that is not fleet's (a missing blob, bad JSON) must not stop the
                // engine or hide every other unit: it is left out, as fleet leaves it out,
                // and [`Registry::unit`] names what is wrong with it.
                Err(RegistryError::BadValue { key, detail }) => {
                    tracing::warn!(%key, "skipping a unit: {detail}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok((units, index))
    }

    /// One unit, if it exists.
    ///
    /// # Errors
    /// When the store fails, or the unit's record is not fleet's
    /// ([`RegistryError::BadValue`] naming the key).
    pub async fn unit(&self, name: &str) -> Result<Option<Unit>> {
        match self.store.get(&self.keys.job(name), true, true).await {
            Ok(e) => self.decode_job(&e.node).await,
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates or replaces a unit: stores its contents (once per hash), its object and its
    /// desired state. A replaced unit keeps its schedule; agents see the new hash and
    /// reload it.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn put_unit(
        &self,
        name: &str,
        contents: UnitContents,
        desired: JobState,
    ) -> Result<Arc<UnitContents>> {
        let hash = contents.hash();
        let blob = serde_json::to_string(&UnitBlob {
            raw: contents.raw().to_owned(),
        })
        .expect("a blob serialises");
        let contents = self.remember(contents);
        match self
            .store
            .apply(Op::Create {
                key: self.keys.blob(&hash.to_string()),
                value: blob,
                dir: false,
                ttl: None,
                unique: false,
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e.into()),
        }
        let object = serde_json::to_string(&JobObject {
            name: name.to_owned(),
            unit_hash: hash.0,
        })
        .expect("an object serialises");
        let set = |key: String, value: String| Op::Set {
            key,
            value,
            dir: false,
            ttl: None,
            refresh: false,
        };
        let object_op = set(self.keys.job_object(name), object);
        let desired_op = set(self.keys.target_state(name), desired.as_str().to_owned());
        if self.store.supports_txn() {
            // One index for both: no reader sees an object without its desired state.
            self.store
                .apply(Op::Txn(Txn {
                    compare: Vec::new(),
                    success: vec![object_op, desired_op],
                    failure: Vec::new(),
                }))
                .await?;
        } else {
            self.store.apply(object_op).await?;
            self.store.apply(desired_op).await?;
        }
        Ok(contents)
    }

    /// Sets a unit's desired state.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn set_desired(&self, name: &str, desired: JobState) -> Result<()> {
        self.store
            .apply(Op::Set {
                key: self.keys.target_state(name),
                value: desired.as_str().to_owned(),
                dir: false,
                ttl: None,
                refresh: false,
            })
            .await?;
        Ok(())
    }

    /// Removes a unit (its whole `job/<unit>` directory). `false` when it did not exist.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn destroy_unit(&self, name: &str) -> Result<bool> {
        match self
            .store
            .apply(Op::Delete {
                key: self.keys.job(name),
                dir: true,
                recursive: true,
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    // ---- schedule (engine) ----

    /// Checks a fence by reading the lease (for stores without transactions).
    async fn check_fence(&self, fence: &Fence) -> Result<()> {
        match self.store.get(&fence.key, false, true).await {
            Ok(e)
                if e.node.created_index == fence.created_index
                    && e.node.value.as_deref() == Some(fence.value.as_str()) =>
            {
                Ok(())
            }
            Ok(_) => Err(RegistryError::Fenced("the lease was taken over".into())),
            Err(e) if e.is_not_found() => Err(RegistryError::Fenced("the lease expired".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `op` only while `fence` holds: in one transaction with the lease compared when
    /// the store has transactions, after a read of the lease otherwise.
    async fn fenced(&self, fence: &Fence, mut compare: Vec<Compare>, op: Op) -> Result<Event> {
        if !self.store.supports_txn() {
            self.check_fence(fence).await?;
            return Ok(self.store.apply(op).await?);
        }
        // Both: a lease taken over by compare-and-swap (a steal by a newer engine
        // version) keeps its creation index but names its new holder.
        compare.splice(
            0..0,
            [
                Compare {
                    key: fence.key.clone(),
                    target: CompareTarget::CreatedIndex(fence.created_index),
                },
                Compare {
                    key: fence.key.clone(),
                    target: CompareTarget::Value(fence.value.clone()),
                },
            ],
        );
        let e = self
            .store
            .apply(Op::Txn(Txn {
                compare,
                success: vec![op],
                failure: Vec::new(),
            }))
            .await?;
        if e.batch.as_ref().is_some_and(|b| b.succeeded) {
            Ok(e)
        } else {
            // Say which comparison failed: the lease, or the unit's own condition.
            self.check_fence(fence).await?;
            Err(StoreError::Kv(kv_core::Error::CompareFailed {
                cause: "schedule changed".into(),
                index: e.index,
            })
            .into())
        }
    }

    /// Schedules a unit on a machine, if it is unscheduled, under the engine's lease.
    ///
    /// # Errors
    /// [`RegistryError::Fenced`] when the lease is gone; error 105 from the store when the
    /// unit is scheduled already.
    pub async fn schedule(&self, unit: &str, machine: &str, fence: &Fence) -> Result<()> {
        let key = self.keys.target(unit);
        let compare = vec![
            Compare {
                key: self.keys.job_object(unit),
                target: CompareTarget::Exists(true),
            },
            Compare {
                key: key.clone(),
                target: CompareTarget::Exists(false),
            },
        ];
        let op = Op::Create {
            key,
            value: machine.to_owned(),
            dir: false,
            ttl: None,
            unique: false,
        };
        self.fenced(fence, compare, op).await?;
        Ok(())
    }

    /// Unschedules a unit from a machine, if it is scheduled there, under the engine's
    /// lease.
    ///
    /// # Errors
    /// [`RegistryError::Fenced`] when the lease is gone; error 101 or 100 when the unit is
    /// not scheduled on that machine.
    pub async fn unschedule(&self, unit: &str, machine: &str, fence: &Fence) -> Result<()> {
        let key = self.keys.target(unit);
        let compare = vec![Compare {
            key: key.clone(),
            target: CompareTarget::Value(machine.to_owned()),
        }];
        let op = Op::CompareAndDelete {
            key,
            prev_value: Some(machine.to_owned()),
            prev_index: None,
        };
        self.fenced(fence, compare, op).await?;
        Ok(())
    }

    // ---- machines ----

    /// Every present machine (with an `object`), in ID order, and the index of the read.
    ///
    /// # Errors
    /// When the store fails or a presence record is not fleet's.
    pub async fn machines(&self) -> Result<(Vec<Machine>, u64)> {
        let (dirs, index) = self.read_dir(&self.keys.machines(), true).await?;
        let mut out = Vec::with_capacity(dirs.len());
        for d in &dirs {
            if let Some(m) = decode_machine(d)? {
                out.push(m);
            }
        }
        Ok((out, index))
    }

    /// Registers a machine's presence for `ttl` seconds; fails with error 105 while another
    /// live machine has the same ID.
    ///
    /// # Errors
    /// When the store fails or refuses.
    pub async fn register_machine(&self, record: &MachineRecord, ttl: u64) -> Result<()> {
        self.store
            .apply(Op::Create {
                key: self.keys.machine_object(&record.id),
                value: serde_json::to_string(record).expect("a record serialises"),
                dir: false,
                ttl: Some(ttl),
                unique: false,
            })
            .await?;
        Ok(())
    }

    /// Renews a machine's presence (and rewrites its record, which may have changed).
    /// Error 100 when it expired meanwhile: the caller registers again.
    ///
    /// # Errors
    /// When the store fails or refuses.
    pub async fn refresh_machine(&self, record: &MachineRecord, ttl: u64) -> Result<()> {
        self.store
            .apply(Op::Update {
                key: self.keys.machine_object(&record.id),
                value: serde_json::to_string(record).expect("a record serialises"),
                ttl: Some(ttl),
                refresh: false,
            })
            .await?;
        Ok(())
    }

    /// Removes a machine's presence (graceful shutdown).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn remove_machine(&self, id: &str) -> Result<()> {
        match self
            .store
            .apply(Op::Delete {
                key: self.keys.machine_object(id),
                dir: false,
                recursive: false,
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A machine's dynamic metadata (`machines/<id>/metadata/*`) as stored, masks (empty
    /// values) included, whether or not the machine is present: what its agent overlays on
    /// its configured metadata (see [`overlay_metadata`]).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn dynamic_metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let (nodes, _) = self
            .read_dir(&self.keys.machine_metadata_dir(id), true)
            .await?;
        Ok(nodes
            .iter()
            .map(|m| {
                let k = m.key.rsplit('/').next().unwrap_or_default().to_owned();
                (k, m.value.clone().unwrap_or_default())
            })
            .collect())
    }

    /// Publishes what a machine offers the scheduler (no TTL: it counts only while the
    /// machine's presence exists).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn set_capacity(&self, id: &str, capacity: &CapacityRecord) -> Result<()> {
        self.store
            .apply(Op::Set {
                key: self.keys.machine_capacity(id),
                value: serde_json::to_string(capacity).expect("a capacity serialises"),
                dir: false,
                ttl: None,
                refresh: false,
            })
            .await?;
        Ok(())
    }

    /// Sets (or, with an empty value, masks) one dynamic metadata key of a machine.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn set_metadata(&self, id: &str, key: &str, value: &str) -> Result<()> {
        self.store
            .apply(Op::Set {
                key: self.keys.machine_metadata(id, key),
                value: value.to_owned(),
                dir: false,
                ttl: None,
                refresh: false,
            })
            .await?;
        Ok(())
    }

    // ---- unit states (agents) ----

    /// Publishes a unit's state on a machine for `ttl` seconds (and under fleet's legacy
    /// key).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn save_state(
        &self,
        unit: &str,
        machine: &str,
        record: &UnitStateRecord,
        ttl: u64,
    ) -> Result<()> {
        let value = serde_json::to_string(record).expect("a record serialises");
        for key in [
            self.keys.unit_state(unit, machine),
            self.keys.legacy_state(unit),
        ] {
            self.store
                .apply(Op::Set {
                    key,
                    value: value.clone(),
                    dir: false,
                    ttl: Some(ttl),
                    refresh: false,
                })
                .await?;
        }
        Ok(())
    }

    /// Removes a machine's state record of a unit (and the legacy key if it is this
    /// machine's). Unlike fleet, other machines' records of the unit stay.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn remove_state(&self, unit: &str, machine: &str) -> Result<()> {
        let ours = self.keys.unit_state(unit, machine);
        let value = match self.store.get(&ours, false, false).await {
            Ok(e) => e.node.value,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let mut ops = vec![Op::Delete {
            key: ours,
            dir: false,
            recursive: false,
        }];
        if let Some(v) = value {
            ops.push(Op::CompareAndDelete {
                key: self.keys.legacy_state(unit),
                prev_value: Some(v),
                prev_index: None,
            });
        }
        for op in ops {
            match self.store.apply(op).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_compare_failed() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Every published unit state, sorted by unit then machine; records that are not
    /// fleet's JSON are skipped (as fleet skips them).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn states(&self) -> Result<(Vec<PublishedState>, u64)> {
        let (dirs, index) = self.read_dir(&self.keys.states(), true).await?;
        let mut out = Vec::new();
        for d in &dirs {
            let unit = d.key.rsplit('/').next().unwrap_or_default();
            decode_states(unit, &d.nodes, &mut out);
        }
        Ok((out, index))
    }

    /// The published states of one unit (`states/<unit>/`), sorted by machine; records
    /// that are not fleet's JSON are skipped.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn unit_states(&self, unit: &str) -> Result<Vec<PublishedState>> {
        let (nodes, _) = self.read_dir(&self.keys.unit_states(unit), true).await?;
        let mut out = Vec::new();
        decode_states(unit, &nodes, &mut out);
        Ok(out)
    }

    /// Writes the launch heartbeat of a unit for `ttl` seconds.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn heartbeat(&self, unit: &str, machine: &str, ttl: u64) -> Result<()> {
        self.store
            .apply(Op::Set {
                key: self.keys.job_state(unit),
                value: machine.to_owned(),
                dir: false,
                ttl: Some(ttl),
                refresh: false,
            })
            .await?;
        Ok(())
    }

    /// Clears a unit's launch heartbeat if this machine wrote it.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn clear_heartbeat(&self, unit: &str, machine: &str) -> Result<()> {
        match self
            .store
            .apply(Op::CompareAndDelete {
                key: self.keys.job_state(unit),
                prev_value: Some(machine.to_owned()),
                prev_index: None,
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_compare_failed() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- engine lease ----

    /// The engine's lease, if anyone holds it.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn lease(&self) -> Result<Option<Lease>> {
        match self.store.get(&self.keys.engine_lease(), false, true).await {
            Ok(e) => Ok(Some(Lease {
                record: LeaseRecord::parse(e.node.value.as_deref().unwrap_or_default()),
                modified_index: e.node.modified_index,
                created_index: e.node.created_index,
                ttl: e.node.ttl,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the lease if nobody holds it. `None` when someone does.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn acquire_lease(&self, record: &LeaseRecord, ttl: u64) -> Result<Option<Lease>> {
        match self
            .store
            .apply(Op::Create {
                key: self.keys.engine_lease(),
                value: record.to_json(),
                dir: false,
                ttl: Some(ttl),
                unique: false,
            })
            .await
        {
            Ok(e) => Ok(Some(lease_of(record, &e))),
            Err(e) if e.is_exists() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews a held lease (compare-and-swap on its index). `None` when it was lost.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn renew_lease(&self, lease: &Lease, ttl: u64) -> Result<Option<Lease>> {
        match self
            .store
            .apply(Op::CompareAndSwap {
                key: self.keys.engine_lease(),
                value: lease.record.to_json(),
                prev_value: None,
                prev_index: Some(lease.modified_index),
                ttl: Some(ttl),
                refresh: false,
            })
            .await
        {
            Ok(e) => Ok(Some(lease_of(&lease.record, &e))),
            Err(e) if e.is_not_found() || e.is_compare_failed() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes over a lease of a lower engine version (compare-and-swap on its index).
    /// `None` when it changed meanwhile.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn steal_lease(
        &self,
        old: &Lease,
        record: &LeaseRecord,
        ttl: u64,
    ) -> Result<Option<Lease>> {
        match self
            .store
            .apply(Op::CompareAndSwap {
                key: self.keys.engine_lease(),
                value: record.to_json(),
                prev_value: None,
                prev_index: Some(old.modified_index),
                ttl: Some(ttl),
                refresh: false,
            })
            .await
        {
            Ok(e) => Ok(Some(lease_of(record, &e))),
            Err(e) if e.is_not_found() || e.is_compare_failed() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a held lease up (graceful shutdown), so another engine takes over at once.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        match self
            .store
            .apply(Op::CompareAndDelete {
                key: self.keys.engine_lease(),
                prev_value: None,
                prev_index: Some(lease.modified_index),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_compare_failed() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads units and machines for one engine pass. Units come from a quorum read, so a
    /// pass never works from a schedule older than the last one it wrote.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let (units, i1) = self.units().await?;
        let (machines, i2) = self.machines().await?;
        Ok(Snapshot {
            units,
            machines,
            index: i1.min(i2),
        })
    }
}

/// The lease written by `e` for `record`.
fn lease_of(record: &LeaseRecord, e: &Event) -> Lease {
    Lease {
        record: record.clone(),
        modified_index: e.node.modified_index,
        created_index: e.node.created_index,
        ttl: e.node.ttl,
    }
}

/// A machine's effective metadata: `configured` overlaid with `dynamic` (set through the
/// API), where an empty dynamic value removes the key.
pub fn overlay_metadata(
    mut configured: BTreeMap<String, String>,
    dynamic: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for (k, v) in dynamic {
        if v.is_empty() {
            configured.remove(&k);
        } else {
            configured.insert(k, v);
        }
    }
    configured
}

/// Decodes the records of one `states/<unit>/` directory into `out`, skipping what is not
/// fleet's JSON (as fleet skips it).
fn decode_states(unit: &str, nodes: &[NodeView], out: &mut Vec<PublishedState>) {
    for n in nodes {
        let Some(value) = n.value.as_deref() else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<UnitStateRecord>(value) else {
            tracing::debug!(key = %n.key, "skipping a unit state that is not fleet's JSON");
            continue;
        };
        out.push(PublishedState {
            unit: unit.to_owned(),
            machine_id: n.key.rsplit('/').next().unwrap_or_default().to_owned(),
            record,
        });
    }
}

/// Decodes one `machines/<id>` directory; `Ok(None)` when it has no presence record.
fn decode_machine(dir: &NodeView) -> Result<Option<Machine>> {
    let mut record = None;
    let mut dynamic = BTreeMap::new();
    let mut capacity = scheduler::Capacity::default();
    for n in &dir.nodes {
        match n.key.rsplit('/').next() {
            Some("capacity") => {
                match serde_json::from_str::<CapacityRecord>(n.value.as_deref().unwrap_or_default())
                {
                    Ok(c) => capacity = c.capacity(),
                    // Capacity only narrows placement: an unreadable record counts as none.
                    Err(e) => tracing::warn!(key = %n.key, "ignoring a capacity record: {e}"),
                }
            }
            Some("object") => {
                let value = n.value.as_deref().unwrap_or_default();
                let r: MachineRecord =
                    serde_json::from_str(value).map_err(|e| RegistryError::BadValue {
                        key: n.key.clone(),
                        detail: format!("not a machine record: {e}"),
                    })?;
                record = Some(r);
            }
            Some("metadata") => {
                for m in &n.nodes {
                    let k = m.key.rsplit('/').next().unwrap_or_default().to_owned();
                    dynamic.insert(k, m.value.clone().unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    let Some(record) = record else {
        return Ok(None);
    };
    let metadata = overlay_metadata(record.metadata.clone().unwrap_or_default(), dynamic);
    Ok(Some(Machine {
        id: record.id.clone(),
        public_ip: record.public_ip.clone(),
        metadata,
        version: record.version.clone(),
        capacity,
        record,
    }))
}
