//! Sessions of the SQL store held in process memory, so that a signed-in
//! request on the embedded default does not read the database (a SQLite
//! query through the pool and its connection thread cost more than the
//! rest of a cached dashboard request together).
//!
//! # Why it stays coherent
//!
//! Only an ended session can make a held entry wrong (a new session is a
//! miss, a slid expiry only matters to the database, and a held entry
//! carries its own expiry). Every session ending — a logout, logout-all, a
//! password change, `stayafrica sessions revoke` in another process — goes
//! through [`super::sql::SqlSessionStore`], which deletes the rows and then,
//! before it returns, appends one byte to a change file beside the SQLite
//! database ([`ChangeFile`]). Every load first asks the file system for the
//! file's size (one `statx`, no database); a size it has not seen yet
//! means some process ended sessions, and everything held is dropped
//! before the load goes on. A size only grows (appends), so no change can
//! hide behind another, unlike a modification time of coarse resolution.
//! So a request that starts after an ending's answer, in any process on
//! that database file, sees the change and reads the database.
//!
//! A load that read the database before an ending and finishes after the
//! drop must not put its stale answer back: entries are put only if no
//! drop happened since the load began (an epoch, checked under the lock
//! the drop takes).
//!
//! An in-memory SQLite database (`sqlite::memory:`) is visible to this
//! process only, which ends its sessions itself: it needs no file. On
//! PostgreSQL without Redis, instances on other machines share the table
//! and no file can tell them, so sessions are not held there.
//!
//! Written here rather than with a cache crate: the entry must be put only
//! if no drop intervened, one atomic step with the drop, which a mutex
//! around a map gives in a few lines.

use foldhash::{HashMap, HashMapExt};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Sessions held at most; past it, everything is dropped and refilled from
/// the database (each entry is about 100 bytes).
const MAX_HELD: usize = 100_000;

/// The change file of a SQLite database: its size counts the session
/// endings of every process on that database.
pub struct ChangeFile {
    path: PathBuf,
}

impl ChangeFile {
    /// The change file beside the database file `db`.
    pub fn beside(db: &std::path::Path) -> Self {
        let mut name = db.as_os_str().to_owned();
        name.push("-sessions-ended");
        ChangeFile {
            path: PathBuf::from(name),
        }
    }

    /// Its size now (0 while no session ever ended).
    fn size(&self) -> anyhow::Result<u64> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Tells every process that sessions ended: one byte appended.
    fn announce(&self) -> anyhow::Result<()> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(b"."))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.path.display()))
    }
}

struct Held {
    /// id hash → (user id, expiry in Unix ms).
    sessions: HashMap<String, (i64, i64)>,
    /// Bumped by every drop; an entry is put only under the epoch its load began in.
    epoch: u64,
    /// The change file's size as of the last drop.
    seen: u64,
}

/// The held sessions of one [`super::sql::SqlSessionStore`].
pub struct NearSessions {
    file: Option<ChangeFile>,
    held: Mutex<Held>,
}

/// What a load found held, and the epoch to put its answer under.
pub struct Lookup {
    pub held: Option<(i64, i64)>,
    pub epoch: u64,
}

impl NearSessions {
    /// Held sessions announced through `file` (`None`: this process is the
    /// database's only user).
    pub fn new(file: Option<ChangeFile>) -> Self {
        NearSessions {
            file,
            held: Mutex::new(Held {
                sessions: HashMap::new(),
                epoch: 0,
                seen: 0,
            }),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The held session of `id_hash`, after dropping everything if another
    /// process (or this one) ended sessions since the last look.
    pub fn lookup(&self, id_hash: &str) -> anyhow::Result<Lookup> {
        let size = match &self.file {
            Some(f) => Some(f.size()?),
            None => None,
        };
        let mut held = self.held();
        if let Some(size) = size
            && size != held.seen
        {
            held.seen = size;
            held.sessions.clear();
            held.epoch += 1;
        }
        Ok(Lookup {
            held: held.sessions.get(id_hash).copied(),
            epoch: held.epoch,
        })
    }

    /// Holds a session read from the database, unless a drop happened since
    /// `epoch` (then the answer may predate an ending).
    pub fn put(&self, epoch: u64, id_hash: &str, user_id: i64, expires_at: i64) {
        let mut held = self.held();
        if held.epoch != epoch {
            return;
        }
        if held.sessions.len() >= MAX_HELD && !held.sessions.contains_key(id_hash) {
            held.sessions.clear();
        }
        held.sessions
            .insert(id_hash.to_owned(), (user_id, expires_at));
    }

    /// Forgets one held session (it expired).
    pub fn forget(&self, id_hash: &str) {
        self.held().sessions.remove(id_hash);
    }

    /// After sessions ended in the database: drops what this process holds
    /// and tells the other processes. Errors if they cannot be told.
    pub fn ended(&self) -> anyhow::Result<()> {
        {
            let mut held = self.held();
            held.sessions.clear();
            held.epoch += 1;
        }
        match &self.file {
            Some(f) => f.announce(),
            None => Ok(()),
        }
    }
}
