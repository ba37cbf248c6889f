//! The durable layer's side of the [`Overlay`]: rebuilding the inode table from the
//! journal at mount, journaling each change, and compacting at mount and clean unmount.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::file::CowFile;
use super::journal::{Journal, NameChange, Record};
use super::Overlay;
use crate::inode::{DirOverlay, Ino, InodeTable, FIRST_CREATED};
use crate::source::{Kind, Source, ROOT};
use crate::Error;

impl Overlay {
    /// A writable layer over `source` whose state lives in `dir` (created 0700 if missing)
    /// and survives unmount and crashes: what the journal there holds is replayed, and the
    /// journal compacted. `source` must be the tree the state was made on.
    pub(crate) fn durable(
        source: Arc<dyn Source>,
        dir: PathBuf,
        block_size: u32,
    ) -> Result<Self, Error> {
        if block_size == 0 {
            return Err(Error::new(libc::EINVAL, "block size must not be zero"));
        }
        let (journal, records) = Journal::open(&dir, block_size)?;
        let journal = Arc::new(journal);
        let table = rebuild(&*source, &journal, records, block_size)?;
        let overlay = Self {
            source,
            scratch: Some(dir),
            block_size,
            table: Mutex::new(table),
            journal: Some(journal),
            closed: std::sync::RwLock::new(false),
        };
        overlay.compact()?;
        Ok(overlay)
    }

    /// Clean unmount: syncs every file and compacts the journal. Call once nothing is
    /// served any more. Nothing to do for a throw-away layer.
    pub(crate) fn close(&self) -> Result<(), Error> {
        // Waits for a hydration step under way; none starts after.
        *self.closed.write().unwrap_or_else(PoisonError::into_inner) = true;
        if self.journal.is_none() {
            return Ok(());
        }
        let files: Vec<Arc<CowFile>> = self
            .table()?
            .iter()
            .filter_map(|(_, inode)| inode.file.clone())
            .collect();
        for file in files {
            file.sync(true)?;
        }
        self.compact()
    }

    /// Rewrites the journal as the current state. Only while nothing else changes it
    /// (mount, unmount): a file's sync journals without the table lock.
    fn compact(&self) -> Result<(), Error> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let table = self.table()?;
        let mut live: Vec<_> = table
            .iter()
            .filter(|(_, inode)| inode.pinned && inode.nlink > 0)
            .collect();
        live.sort_by_key(|(ino, _)| *ino);
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        let mut files = Vec::new();
        for (ino, inode) in live {
            nodes.push(node_record(ino, inode));
            if let Some(dir) = &inode.dir {
                let dir_mtime = inode.mtime.unwrap_or_else(SystemTime::now);
                let name = |name: &OsStr, change| Record::Name {
                    dir: ino,
                    dir_mtime,
                    name: name.to_owned(),
                    change,
                };
                names.extend(
                    (dir.hidden.iter()).map(|n| name(n, NameChange::Remove { hide: true })),
                );
                names.extend((dir.entries.iter()).map(|(n, &i)| name(n, NameChange::Add(i))));
            }
            if let Some(file) = &inode.file {
                files.push(file.snapshot()?);
            }
        }
        nodes.extend(names);
        nodes.extend(files);
        journal.rewrite(&nodes)
    }

    /// Journals the attributes of `ino` with the current change (durable only).
    pub(super) fn log_node(&self, table: &mut InodeTable, ino: Ino) {
        if self.journal.is_none() {
            return;
        }
        if let Some(inode) = table.get(ino) {
            let record = node_record(ino, inode);
            table.log.push(record);
        }
    }

    /// Journals a change of name in `dir` with the current change (durable only).
    pub(super) fn log_name(
        &self,
        table: &mut InodeTable,
        dir: Ino,
        name: &OsStr,
        change: NameChange,
    ) {
        if self.journal.is_none() {
            return;
        }
        let dir_mtime = table
            .get(dir)
            .and_then(|d| d.mtime)
            .unwrap_or_else(SystemTime::now);
        table.log.push(Record::Name {
            dir,
            dir_mtime,
            name: name.to_owned(),
            change,
        });
    }

    /// Appends the current change to the journal as one frame (durable only). Every change
    /// is then in the journal, the removals of files dropped so far included.
    pub(super) fn commit(&self, table: &mut InodeTable) -> Result<(), Error> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        journal.append(&std::mem::take(&mut table.log))?;
        journal.doom_dropped()
    }
}

fn node_record(ino: Ino, inode: &crate::inode::Inode) -> Record {
    Record::Node {
        ino,
        kind: inode.kind,
        perm: inode.perm,
        mtime: inode.mtime,
        nlink: inode.nlink,
        target: inode.target.clone(),
    }
}

/// The inode table the journal's records describe, on `source`, whose node ids may differ
/// from those the records were written with: each source node is found again by path.
fn rebuild(
    source: &dyn Source,
    journal: &Arc<Journal>,
    records: Vec<Record>,
    block_size: u32,
) -> Result<InodeTable, Error> {
    let corrupt =
        |what: String| Error::new(libc::EUCLEAN, format!("copy-on-write journal: {what}"));
    let mut table = InodeTable::new();
    let mut nodes: HashMap<Ino, Ino> = HashMap::from([(ROOT, ROOT)]);
    let mut gone = HashSet::new();
    let now = |nodes: &HashMap<Ino, Ino>, ino: Ino| match ino {
        FIRST_CREATED.. => Ok(ino),
        _ => nodes
            .get(&ino)
            .copied()
            .ok_or_else(|| corrupt(format!("source node {ino} used before it is named"))),
    };
    for record in records {
        match record {
            Record::Source { ino, parent, name } => {
                let parent = now(&nodes, parent)?;
                let node = source.lookup(parent, &name)?.ok_or_else(|| {
                    corrupt(format!(
                        "{name:?} is not in the source (directory {parent}): the state was \
                         made on another tree"
                    ))
                })?;
                journal.learn(node, parent, &name);
                nodes.insert(ino, node);
            }
            Record::Node {
                ino,
                kind,
                perm,
                mtime,
                nlink,
                target,
            } => {
                let ino = now(&nodes, ino)?;
                if nlink == 0 {
                    table.remove(ino);
                    gone.insert(ino);
                    continue;
                }
                let inode = table.restore(ino, kind);
                inode.perm = perm;
                inode.mtime = mtime;
                inode.nlink = nlink;
                inode.target = target;
                inode.pinned = true;
                if kind == Kind::Dir && ino >= FIRST_CREATED {
                    inode.dir.get_or_insert_with(DirOverlay::default);
                }
            }
            Record::Name {
                dir,
                dir_mtime,
                name,
                change,
            } => {
                let dir = now(&nodes, dir)?;
                if gone.contains(&dir) {
                    continue;
                }
                let change = match change {
                    NameChange::Add(ino) => {
                        let ino = now(&nodes, ino)?;
                        if table.get(ino).is_none() {
                            if ino >= FIRST_CREATED {
                                return Err(corrupt(format!(
                                    "{name:?} names inode {ino}, never made"
                                )));
                            }
                            let kind = source.getattr(ino)?.kind;
                            table.restore(ino, kind).pinned = true;
                        }
                        NameChange::Add(ino)
                    }
                    remove => remove,
                };
                let inode = table.restore(dir, Kind::Dir);
                inode.pinned = true;
                inode.mtime = Some(dir_mtime);
                let overlay = inode.dir.get_or_insert_with(DirOverlay::default);
                match change {
                    NameChange::Add(ino) => {
                        overlay.entries.insert(name, ino);
                    }
                    NameChange::Remove { hide } => {
                        overlay.entries.remove(&name);
                        if hide {
                            overlay.hidden.insert(name);
                        }
                    }
                }
            }
            Record::File(mut record) => {
                record.ino = now(&nodes, record.ino)?;
                let ino = record.ino;
                if gone.contains(&ino) {
                    continue;
                }
                if table.get(ino).is_none() && ino >= FIRST_CREATED {
                    // Made, then gone before the journal named it: nothing refers to it.
                    continue;
                }
                let inode = table.restore(ino, Kind::File);
                inode.pinned = true;
                let file = inode.file.get_or_insert_with(|| {
                    Arc::new(CowFile::restore(&record, block_size, journal.clone()))
                });
                file.apply(&record)?;
            }
        }
    }
    for (_, inode) in table.iter() {
        if let Some(file) = &inode.file {
            file.reopen()?;
        }
    }
    // Made, never synced: empty, as a new file on a local disk would come back.
    let empty: Vec<(Ino, Option<SystemTime>)> = table
        .iter()
        .filter(|(ino, i)| *ino >= FIRST_CREATED && i.kind == Kind::File && i.file.is_none())
        .map(|(ino, i)| (ino, i.mtime))
        .collect();
    for (ino, mtime) in empty {
        let file = CowFile::new(
            ino,
            None,
            0,
            mtime.unwrap_or_else(SystemTime::now),
            journal.new_data_path(),
            block_size,
            Some(journal.clone()),
        );
        table.restore(ino, Kind::File).file = Some(Arc::new(file));
    }
    Ok(table)
}
