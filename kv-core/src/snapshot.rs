//! Streaming, versioned, checksummed snapshots of a [`Store`].
//!
//! Layout (all integers little-endian, lengths and counts as LEB128 varints):
//!
//! ```text
//! magic "FLKVSNAP" | version u32 | store index u64
//! root node (recursive): tag u8 (0 file, 1 dir) | created u64 | modified u64 | expire u64
//!                        file: value (len + bytes); dir: child count, then per child:
//!                        name (len + bytes) and its node, in key order
//! history: count, then per event: refresh u8 | event
//! trailer "FLKVEND!" | CRC-32 (IEEE) of every byte before it, u32
//! ```
//!
//! Neither side holds a second copy of the tree: writing streams through a 64 KiB buffer
//! and reading rebuilds nodes as bytes arrive. Watchers are not part of a snapshot.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use crate::event::{Action, Event};
use crate::node::{Kind, Name, Node, NodeView, PERMANENT, sorted};
use crate::store::Store;
use crate::watch::{EventHistory, HISTORY_CAPACITY};

const MAGIC: &[u8; 8] = b"FLKVSNAP";
const TRAILER: &[u8; 8] = b"FLKVEND!";
/// The format version written by this crate.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Upper bound on one string in a snapshot; anything larger is corruption, not data.
const MAX_STRING: u64 = 1 << 31;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The underlying reader or writer failed.
    #[error("snapshot I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The input does not start with the snapshot magic: not a kv-core snapshot.
    #[error("not a kv-core snapshot (bad magic {found:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A snapshot of a version this build cannot read.
    #[error("unsupported snapshot version {found} (this build reads version {SNAPSHOT_VERSION})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
    },
    /// The input ended before the snapshot did.
    #[error("snapshot truncated at byte {offset} while reading {what}")]
    Truncated {
        /// Bytes read so far.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The content is malformed.
    #[error("corrupt snapshot at byte {offset}: {what}")]
    Corrupt {
        /// Bytes read so far.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The content parsed but its checksum does not match.
    #[error("snapshot checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// The CRC-32 in the trailer.
        stored: u32,
        /// The CRC-32 of the bytes read.
        computed: u32,
    },
}

// ---------------------------------------------------------------- writing

struct Writer<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Writer<'_, W> {
    const CHUNK: usize = 64 * 1024;

    fn flush_buf(&mut self) -> io::Result<()> {
        self.crc.update(&self.buf);
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    #[inline]
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        if self.buf.len() + b.len() > Self::CHUNK {
            self.flush_buf()?;
            if b.len() > Self::CHUNK {
                self.crc.update(b);
                self.written += b.len() as u64;
                return self.out.write_all(b);
            }
        }
        self.buf.extend_from_slice(b);
        Ok(())
    }

    #[inline]
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    #[inline]
    fn varint(&mut self, mut v: u64) -> io::Result<()> {
        let mut tmp = [0u8; 10];
        let mut i = 0;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                tmp[i] = b;
                i += 1;
                break;
            }
            tmp[i] = b | 0x80;
            i += 1;
        }
        self.bytes(&tmp[..i])
    }

    #[inline]
    fn str(&mut self, s: &str) -> io::Result<()> {
        self.varint(s.len() as u64)?;
        self.bytes(s.as_bytes())
    }

    /// A node; `value` is a file's value (from its entry's [`Name`](crate::node::Name)).
    fn node(&mut self, n: &Node, value: &str) -> io::Result<()> {
        let mut head = [0u8; 25];
        head[0] = u8::from(n.is_dir());
        head[1..9].copy_from_slice(&n.created_index.to_le_bytes());
        head[9..17].copy_from_slice(&n.modified_index.to_le_bytes());
        head[17..25].copy_from_slice(&n.expire_at.to_le_bytes());
        self.bytes(&head)?;
        match &n.kind {
            Kind::File => self.str(value),
            Kind::Dir(children) => {
                self.varint(children.len() as u64)?;
                for (name, child) in sorted(children) {
                    self.str(name.name())?;
                    self.node(child, name.value())?;
                }
                Ok(())
            }
        }
    }

    fn opt_str(&mut self, s: Option<&str>) -> io::Result<()> {
        match s {
            None => self.bytes(&[0]),
            Some(s) => {
                self.bytes(&[1])?;
                self.str(s)
            }
        }
    }

    fn view(&mut self, v: &NodeView) -> io::Result<()> {
        self.str(&v.key)?;
        self.opt_str(v.value.as_deref())?;
        self.bytes(&[u8::from(v.dir)])?;
        self.u64(v.expiration.unwrap_or(PERMANENT))?;
        match v.ttl {
            None => self.bytes(&[0])?,
            Some(t) => {
                self.bytes(&[1])?;
                self.bytes(&t.to_le_bytes())?;
            }
        }
        self.u64(v.modified_index)?;
        self.u64(v.created_index)?;
        self.varint(v.nodes.len() as u64)?;
        for c in &v.nodes {
            self.view(c)?;
        }
        Ok(())
    }

    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.bytes(&[action_code(e.action)])?;
        self.view(&e.node)?;
        match &e.prev_node {
            None => self.bytes(&[0])?,
            Some(p) => {
                self.bytes(&[1])?;
                self.view(p)?;
            }
        }
        self.u64(e.index)
    }
}

fn action_code(a: Action) -> u8 {
    match a {
        Action::Get => 0,
        Action::Create => 1,
        Action::Set => 2,
        Action::Update => 3,
        Action::Delete => 4,
        Action::CompareAndSwap => 5,
        Action::CompareAndDelete => 6,
        Action::Expire => 7,
        Action::Txn => 8,
    }
}

fn action_from(code: u8) -> Option<Action> {
    Some(match code {
        0 => Action::Get,
        1 => Action::Create,
        2 => Action::Set,
        3 => Action::Update,
        4 => Action::Delete,
        5 => Action::CompareAndSwap,
        6 => Action::CompareAndDelete,
        7 => Action::Expire,
        8 => Action::Txn,
        _ => return None,
    })
}

impl Store {
    /// Writes the whole replicated state (tree, TTLs, history, index) to `w`, streaming.
    /// The bytes are a deterministic function of the state: equal stores give equal
    /// snapshots. Returns the number of bytes written.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] if `w` fails.
    pub fn snapshot(&self, w: &mut impl Write) -> Result<u64, SnapshotError> {
        let mut wr = Writer {
            out: w,
            buf: Vec::with_capacity(Writer::<Vec<u8>>::CHUNK),
            crc: crc32fast::Hasher::new(),
            written: 0,
        };
        wr.bytes(MAGIC)?;
        wr.bytes(&SNAPSHOT_VERSION.to_le_bytes())?;
        wr.u64(self.index)?;
        wr.node(&self.root, "")?;
        wr.varint(self.history.entries.len() as u64)?;
        for h in &self.history.entries {
            wr.bytes(&[u8::from(h.refresh)])?;
            wr.event(&h.event)?;
        }
        wr.bytes(TRAILER)?;
        wr.flush_buf()?;
        let crc = wr.crc.clone().finalize();
        wr.out.write_all(&crc.to_le_bytes())?;
        wr.out.flush()?;
        Ok(wr.written + 4)
    }

    /// Rebuilds a store from a snapshot written by [`Store::snapshot`], streaming. The
    /// result has no watchers.
    ///
    /// # Errors
    /// [`SnapshotError::BadMagic`] for foreign input, [`SnapshotError::UnsupportedVersion`],
    /// [`SnapshotError::Truncated`], [`SnapshotError::Corrupt`] (with the byte offset),
    /// [`SnapshotError::Checksum`], or [`SnapshotError::Io`] from `r`. Trailing bytes
    /// after the snapshot are left unread.
    pub fn restore(r: &mut impl Read) -> Result<Store, SnapshotError> {
        let mut rd = Reader {
            inner: r,
            buf: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
            crc: crc32fast::Hasher::new(),
            offset: 0,
        };
        let mut magic = [0u8; 8];
        let n = rd.read_some(&mut magic)?;
        if n < 8 || &magic != MAGIC {
            return Err(SnapshotError::BadMagic {
                found: magic[..n].to_vec(),
            });
        }
        let version = u32::from_le_bytes(rd.array::<4>("version")?);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version });
        }
        let index = rd.u64("store index")?;
        let mut ttl = BTreeSet::new();
        let root = rd.tree(&mut ttl)?;
        if !root.is_dir() {
            return Err(rd.corrupt("the root is not a directory"));
        }
        let count = rd.varint("history length")?;
        if count > HISTORY_CAPACITY as u64 {
            return Err(rd.corrupt(format!(
                "history of {count} events exceeds {HISTORY_CAPACITY}"
            )));
        }
        let mut history = EventHistory::default();
        for _ in 0..count {
            let refresh = rd.flag("refresh flag")?;
            let event = rd.event()?;
            history.push(event, refresh);
        }
        let trailer = rd.array::<8>("trailer")?;
        if &trailer != TRAILER {
            return Err(rd.corrupt("missing end marker"));
        }
        rd.fold_consumed();
        let computed = rd.crc.clone().finalize();
        let stored = u32::from_le_bytes(rd.array::<4>("checksum")?);
        if stored != computed {
            return Err(SnapshotError::Checksum { stored, computed });
        }
        let mut store = Store::with_index(index);
        store.root = root;
        store.ttl = ttl;
        store.history = history;
        Ok(store)
    }
}

// ---------------------------------------------------------------- reading

struct Reader<'a, R: Read> {
    inner: &'a mut R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// CRC of the bytes consumed so far (folded in when the buffer is compacted).
    crc: crc32fast::Hasher,
    offset: u64,
}

impl<R: Read> Reader<'_, R> {
    /// Hashes the consumed bytes and moves the unconsumed ones to the front.
    fn fold_consumed(&mut self) {
        self.crc.update(&self.buf[..self.pos]);
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
    }

    fn refill(&mut self) -> io::Result<bool> {
        self.fold_consumed();
        loop {
            match self.inner.read(&mut self.buf[self.len..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes `n` bytes available at `pos` (n <= buffer size); false at end of input.
    fn ensure(&mut self, n: usize) -> io::Result<bool> {
        while self.len - self.pos < n {
            if !self.refill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn read_some(&mut self, out: &mut [u8]) -> Result<usize, SnapshotError> {
        let mut got = 0;
        while got < out.len() {
            if self.pos == self.len && !self.refill()? {
                break;
            }
            let n = (self.len - self.pos).min(out.len() - got);
            out[got..got + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            got += n;
        }
        Ok(got)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SnapshotError> {
        if !self.ensure(N)? {
            return Err(SnapshotError::Truncated {
                offset: self.offset,
                what,
            });
        }
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        self.offset += N as u64;
        Ok(a)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array::<8>(what)?))
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, SnapshotError> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.corrupt(format!("{what}: expected 0 or 1, found {b}"))),
        }
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.array::<1>(what)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt(format!("{what}: varint too long")))
    }

    fn bytes_into(
        &mut self,
        n: usize,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<(), SnapshotError> {
        let mut left = n;
        while left > 0 {
            if self.pos == self.len && !self.refill()? {
                return Err(SnapshotError::Truncated {
                    offset: self.offset,
                    what,
                });
            }
            let k = (self.len - self.pos).min(left);
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            self.offset += k as u64;
            left -= k;
        }
        Ok(())
    }

    fn string(&mut self, what: &'static str) -> Result<String, SnapshotError> {
        let n = self.varint(what)?;
        if n > MAX_STRING {
            return Err(self.corrupt(format!("{what}: length {n} is implausible")));
        }
        let n = n as usize;
        // Short strings (almost all keys) are decoded straight from the buffer.
        if n <= self.buf.len() && self.ensure(n)? {
            let s = std::str::from_utf8(&self.buf[self.pos..self.pos + n])
                .map_err(|e| self.corrupt(format!("{what}: invalid UTF-8: {e}")))?
                .to_owned();
            self.pos += n;
            self.offset += n as u64;
            return Ok(s);
        }
        let mut v = Vec::new();
        self.bytes_into(n, &mut v, what)?;
        String::from_utf8(v).map_err(|e| self.corrupt(format!("{what}: invalid UTF-8: {e}")))
    }

    fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, SnapshotError> {
        Ok(if self.flag(what)? {
            Some(self.string(what)?)
        } else {
            None
        })
    }

    fn corrupt(&self, what: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            offset: self.offset,
            what: what.into(),
        }
    }

    fn node_head(&mut self) -> Result<(bool, u64, u64, u64), SnapshotError> {
        let h = self.array::<25>("node header")?;
        let dir = match h[0] {
            0 => false,
            1 => true,
            t => return Err(self.corrupt(format!("unknown node tag {t}"))),
        };
        let num = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().expect("8 bytes"));
        Ok((dir, num(1..9), num(9..17), num(17..25)))
    }

    /// Reads the tree without recursion (so a hostile snapshot cannot overflow the
    /// stack), filling the TTL index as nodes arrive.
    fn tree(&mut self, ttl: &mut BTreeSet<(u64, Box<str>)>) -> Result<Node, SnapshotError> {
        struct Frame {
            node: Node,
            name: Name,
            left: u64,
            path_len: usize,
        }
        let mut path = String::new();
        let (dir, c, m, e) = self.node_head()?;
        if !dir {
            return Err(self.corrupt("the root is not a directory"));
        }
        let left = self.varint("child count")?;
        let mut stack = vec![Frame {
            node: Node {
                created_index: c,
                modified_index: m,
                expire_at: e,
                kind: Kind::Dir(Default::default()),
            },
            name: Name::dir(""),
            left,
            path_len: 0,
        }];
        loop {
            let top = stack.last_mut().expect("non-empty");
            if top.left == 0 {
                let done = stack.pop().expect("non-empty");
                path.truncate(done.path_len);
                match stack.last_mut() {
                    None => return Ok(done.node),
                    Some(parent) => {
                        let children = parent.node.children_mut().expect("frames are directories");
                        if children.insert(done.name, done.node).is_some() {
                            return Err(self.corrupt("duplicate child name"));
                        }
                    }
                }
                continue;
            }
            top.left -= 1;
            let name = self.string("child name")?;
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(self.corrupt(format!("invalid child name {name:?}")));
            }
            let (dir, c, m, e) = self.node_head()?;
            let path_len = path.len();
            path.push('/');
            path.push_str(&name);
            if e != PERMANENT {
                ttl.insert((e, path.as_str().into()));
            }
            if dir {
                let left = self.varint("child count")?;
                let node = Node {
                    created_index: c,
                    modified_index: m,
                    expire_at: e,
                    kind: Kind::Dir(Default::default()),
                };
                stack.push(Frame {
                    node,
                    name: Name::dir(&name),
                    left,
                    path_len,
                });
            } else {
                let value = self.string("value")?;
                let node = Node {
                    created_index: c,
                    modified_index: m,
                    expire_at: e,
                    kind: Kind::File,
                };
                path.truncate(path_len);
                let parent = stack
                    .last_mut()
                    .expect("non-empty")
                    .node
                    .children_mut()
                    .expect("directory");
                if parent.insert(Name::file(&name, &value), node).is_some() {
                    return Err(self.corrupt("duplicate child name"));
                }
            }
        }
    }

    fn view(&mut self, depth: u32) -> Result<NodeView, SnapshotError> {
        if depth > 64 {
            return Err(self.corrupt("event node nesting too deep"));
        }
        let key = self.string("event key")?;
        let value = self.opt_string("event value")?;
        let dir = self.flag("event dir flag")?;
        let exp = self.u64("event expiration")?;
        let ttl = if self.flag("event ttl flag")? {
            Some(i64::from_le_bytes(self.array::<8>("event ttl")?))
        } else {
            None
        };
        let modified_index = self.u64("event modified index")?;
        let created_index = self.u64("event created index")?;
        let n = self.varint("event child count")?;
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(self.view(depth + 1)?);
        }
        Ok(NodeView {
            key,
            value,
            dir,
            expiration: (exp != PERMANENT).then_some(exp),
            ttl,
            nodes,
            modified_index,
            created_index,
        })
    }

    fn event(&mut self) -> Result<Event, SnapshotError> {
        let code = self.array::<1>("event action")?[0];
        let action = action_from(code)
            .ok_or_else(|| self.corrupt(format!("unknown event action {code}")))?;
        let node = self.view(0)?;
        let prev_node = if self.flag("prev node flag")? {
            Some(self.view(0)?)
        } else {
            None
        };
        let index = self.u64("event index")?;
        Ok(Event {
            action,
            node,
            prev_node,
            index,
            batch: None,
        })
    }
}
