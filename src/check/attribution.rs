//! Pass 3: which backups and files a problem touches.

use super::*;

/// The (relative path, problem) pairs of the damage below a tree; empty for a clean one.
pub(super) type Hits = Rc<Vec<(String, usize)>>;

/// Pass 3's results per tree and chunk-list id: an entry per distinct tree or list.
#[derive(Default)]
pub(super) struct Memo {
    trees: HashMap<BlobId, Hits>,
    lists: HashMap<BlobId, Vec<usize>>,
}

impl Checker<'_> {
    pub(super) fn hit(&self, loc: &Loc) -> Option<usize> {
        let pack = *self.pack_index.get(&loc.pack)?;
        self.bad_packs
            .get(&pack)
            .or_else(|| self.bad_blobs.get(&(pack, loc.offset)))
            .copied()
    }

    /// Pass 3: the damaged paths below a tree, relative to it; memoised per tree id.
    pub(super) fn tree_hits(&mut self, r: &BlobRef, memo: &mut Memo) -> Hits {
        if let Some(h) = memo.trees.get(&r.id) {
            return h.clone();
        }
        let mut out = Vec::new();
        if let Some(p) = self.hit(&r.loc) {
            out.push((String::new(), p));
        } else if let Ok(dir) = self.repo.load_dir(r) {
            for node in &dir.entries {
                match &node.kind {
                    NodeKind::Dir { tree } => {
                        for (sub, p) in self.tree_hits(tree, memo).iter() {
                            let path = if sub.is_empty() {
                                node.name.clone()
                            } else {
                                format!("{}/{sub}", node.name)
                            };
                            out.push((path, *p));
                        }
                    }
                    NodeKind::File { lists, .. } => {
                        let mut ps = BTreeSet::new();
                        for l in lists {
                            ps.extend(self.list_hits(l, &mut memo.lists));
                        }
                        out.extend(ps.into_iter().map(|p| (node.name.clone(), p)));
                    }
                    NodeKind::Symlink { .. } => {}
                }
            }
        }
        let h = Rc::new(out);
        memo.trees.insert(r.id, h.clone());
        h
    }

    /// The problems touching a chunk list's chunks; memoised per list id (a changed file's
    /// unchanged lists are shared with other backups).
    pub(super) fn list_hits(
        &self,
        l: &BlobRef,
        memo: &mut HashMap<BlobId, Vec<usize>>,
    ) -> Vec<usize> {
        if let Some(h) = memo.get(&l.id) {
            return h.clone();
        }
        let hits: BTreeSet<usize> = match self.hit(&l.loc) {
            Some(p) => [p].into(),
            None => match self.repo.load_chunk_list(l) {
                Ok(chunks) => chunks
                    .iter()
                    .filter_map(|c| c.loc.as_ref().and_then(|loc| self.hit(loc)))
                    .collect(),
                // Reported in pass 1.
                Err(_) => BTreeSet::new(),
            },
        };
        let hits: Vec<usize> = hits.into_iter().collect();
        memo.insert(l.id, hits.clone());
        hits
    }

    pub(super) fn attribute(&mut self, snapshots: &[Snapshot]) {
        let mut memo = Memo::default();
        for s in snapshots {
            for (path, p) in self.tree_hits(&s.root, &mut memo).iter() {
                let problem = &mut self.report.problems[*p];
                problem.backups.insert(s.id.clone());
                problem.files.insert(if path.is_empty() {
                    ".".into()
                } else {
                    path.clone()
                });
            }
        }
    }
}
