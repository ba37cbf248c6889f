//! Pass 2 for WAL: what each backup needs archived, continuity per timeline, and the
//! history files and WAL each fork needs.

use super::*;

/// The missing segment ranges (inclusive) of `from..=to`, given the archived segments, sorted.
pub(super) fn missing_ranges(have: &[u64], from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = from;
    let start = have.partition_point(|&s| s < from);
    for &s in &have[start..] {
        if s > to {
            break;
        }
        if s > next {
            out.push((next, s - 1));
        }
        next = s + 1;
    }
    if next <= to {
        out.push((next, to));
    }
    out
}

/// The WAL one backup needs on one timeline its recovery can follow: on its own timeline from
/// its start segment, through its stop segment (to restore it); on a later timeline whose
/// history holds its end, from that timeline's first segment; in both cases up to the next
/// backup on the same path or the end of the timeline's archive (to recover past it). The
/// ancestors' WAL before a fork is `check_timelines`' part.
#[derive(Debug, Clone)]
pub(super) struct WalNeed {
    pub(super) backup: String,
    /// The timeline whose segments these are.
    pub(super) tli: u32,
    pub(super) from: u64,
    /// The backup's stop segment, on its own timeline.
    pub(super) stop: Option<u64>,
    pub(super) to: u64,
}

impl WalNeed {
    pub(super) fn covers(&self, tli: u32, segno: u64) -> bool {
        tli == self.tli && (self.from..=self.to).contains(&segno)
    }
}

/// Where each backup of one cluster needs WAL, given the timeline tree and the last archived
/// segment of each timeline.
pub(super) fn wal_needs(
    backups: &[&Snapshot],
    seg_size: u64,
    tree: &TimelineTree,
    last_of: impl Fn(u32) -> Option<u64>,
) -> Vec<WalNeed> {
    let mut sorted: Vec<&Snapshot> = backups.to_vec();
    sorted.sort_by_key(|s| s.start_lsn);
    let targets: BTreeSet<u32> = tree
        .timelines()
        .chain(sorted.iter().map(|s| s.timeline))
        .collect();
    let mut out = Vec::new();
    for (i, s) in sorted.iter().enumerate() {
        let point = BackupPoint::from(*s);
        for &tli in &targets {
            let Some(from) = point.first_read_on(tree, tli, seg_size) else {
                continue;
            };
            let stop = (tli == s.timeline).then(|| segment_of(s.stop_lsn, seg_size));
            let next = sorted[i + 1..]
                .iter()
                .find(|n| tree.contains(tli, n.timeline, n.stop_lsn))
                .map(|n| segment_of(n.start_lsn, seg_size).saturating_sub(1));
            let Some(to) = next.or(last_of(tli)).or(stop) else {
                continue;
            };
            let to = to.max(stop.unwrap_or(0));
            if to >= from {
                out.push(WalNeed {
                    backup: s.id.clone(),
                    tli,
                    from,
                    stop,
                    to,
                });
            }
        }
    }
    out
}

/// The timelines a WAL gap cuts off, and the backups they are cut off from.
pub(super) type CutOff = (BTreeSet<u32>, BTreeSet<String>);

impl Checker<'_> {
    /// Pass 2 for one cluster's WAL: gaps in what each backup needs, and with `read_data`
    /// every archived file and summary.
    pub(super) fn check_wal(
        &mut self,
        sysid: u64,
        system: &System,
        backups: &[&Snapshot],
        survey: &Survey,
    ) -> Result<()> {
        let seg_size = archive::segment_size(system);
        let have: HashMap<u32, &[u64]> = survey
            .timelines
            .iter()
            .map(|t| (t.timeline, t.wal.segnos.as_slice()))
            .collect();
        let needs = wal_needs(backups, seg_size, &survey.tree, |tli| {
            have.get(&tli).and_then(|v| v.last().copied())
        });
        let mut gaps: BTreeMap<(u32, u64, u64), usize> = BTreeMap::new();
        for need in &needs {
            let segnos = have.get(&need.tli).copied().unwrap_or_default();
            for (a, b) in missing_ranges(segnos, need.from, need.to) {
                let name = |s| segment_name(need.tli, s, seg_size);
                let p = match gaps.get(&(need.tli, a, b)) {
                    Some(&p) => p,
                    None => {
                        let missing = format!("WAL segments {} – {} are missing", name(a), name(b));
                        let detail = match need.stop {
                            Some(stop) if a <= stop => {
                                format!("{missing}: backup {} cannot be restored", need.backup)
                            }
                            Some(_) => format!(
                                "{missing}: recovery from backup {} stops before them",
                                need.backup
                            ),
                            None => format!(
                                "{missing}: recovery from backup {} along timeline {} stops \
                                 before them",
                                need.backup, need.tli
                            ),
                        };
                        let key = keys::wal_file(sysid, need.tli, &name(a));
                        let p = self.problem(Problem::new(ProblemKind::WalGap, key, detail));
                        gaps.insert((need.tli, a, b), p);
                        p
                    }
                };
                self.report.problems[p].backups.insert(need.backup.clone());
            }
        }
        let files = wal::files(self.repo, sysid)?;
        let sums = wal::summaries(self.repo, sysid)?;
        let pieces = self.repo.backend().list(&keys::wal_stream_system(sysid))?;
        self.report.wal_objects += files.len() + sums.len() + pieces.len();
        for (key, kind) in files
            .iter()
            .map(|o| (&o.key, ProblemKind::BadWal))
            .chain(sums.iter().map(|o| (&o.key, ProblemKind::BadWalSummary)))
            .chain(pieces.iter().map(|k| (k, ProblemKind::BadStreamedWal)))
        {
            if !self.wants_data(key) {
                continue;
            }
            if self.record.is_some() && !self.opts.full {
                match self.repo.backend().size(key) {
                    Ok(s) if self.fresh(key, s) => continue,
                    Err(e) if e.is_not_found() => continue,
                    other => {
                        other?;
                    }
                }
            }
            let raw = match self.repo.backend().get(key) {
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            self.read(raw.len() as u64);
            self.report.wal_objects_read += 1;
            let opened = self
                .repo
                .crypto()
                .open(key, &raw)
                .and_then(|payload| opens_as(kind, key, &payload));
            match opened {
                Ok(()) => self.remember(key, raw.len() as u64)?,
                Err(e) => {
                    let reason = match e {
                        StoreError::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    let p = self.problem(Problem::new(kind, key, reason));
                    // A piece's segment is the last part but one of its key.
                    let mut parts = key.rsplit('/');
                    let name = match kind {
                        ProblemKind::BadStreamedWal => parts.nth(1),
                        _ => parts.next(),
                    };
                    if let Some(WalFile::Segment { tli, segno } | WalFile::Partial { tli, segno }) =
                        name.and_then(|n| WalFile::parse(n, seg_size))
                    {
                        for need in needs.iter().filter(|n| n.covers(tli, segno)) {
                            self.report.problems[p].backups.insert(need.backup.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Pass 2 for one cluster's timelines: history files, the WAL each fork needs from its
    /// ancestors, and timelines both being written.
    pub(super) fn check_timelines(
        &mut self,
        sysid: u64,
        system: &System,
        backups: &[&Snapshot],
        survey: &Survey,
    ) -> Result<()> {
        let seg_size = archive::segment_size(system);
        let tree = &survey.tree;
        for &tli in &tree.missing {
            let name = WalFile::History { tli }.name(seg_size);
            let mut p = Problem::new(
                ProblemKind::MissingHistory,
                keys::wal_file(sysid, tli, &name),
                format!(
                    "timeline {tli} holds WAL but its history file {name} is missing or \
                     unreadable: recovery cannot follow timeline {tli} from a backup on an \
                     earlier timeline. Archive it again from pg_wal/{name} of the server that \
                     created timeline {tli} (pgsnapfs wal-push)"
                ),
            );
            p.backups.extend(
                backups
                    .iter()
                    .filter(|b| b.timeline < tli)
                    .map(|b| b.id.clone()),
            );
            self.problem(p);
        }
        let have: HashSet<(u32, u64)> = survey
            .timelines
            .iter()
            .flat_map(|t| t.wal.segnos.iter().map(move |s| (t.timeline, *s)))
            .collect();
        let have = |tli: u32, segno: u64| have.contains(&(tli, segno));
        // (timeline, first, last) of a gap -> the timelines it cuts off, and from which backups.
        let mut cut: BTreeMap<(u32, u64, u64), CutOff> = BTreeMap::new();
        for t in &survey.timelines {
            let Some(_) = t.parent else { continue };
            let tli = t.timeline;
            let reaching: Vec<&&Snapshot> = backups
                .iter()
                .filter(|b| b.timeline != tli && tree.contains(tli, b.timeline, b.stop_lsn))
                .collect();
            let Some(from) = reaching
                .iter()
                .map(|b| segment_of(b.start_lsn, seg_size))
                .min()
            else {
                continue;
            };
            // The ancestors' WAL up to the fork; and the switch segment itself once the
            // timeline has archived any (a newly promoted server has not yet).
            let first = tree.first_segment(tli, seg_size);
            let to = if t.wal.segnos.is_empty() {
                first.saturating_sub(1)
            } else {
                first
            };
            for gap in tree.missing_on_path(tli, from, to, seg_size, &have) {
                let e = cut.entry(gap).or_default();
                e.0.insert(tli);
                e.1.extend(
                    reaching
                        .iter()
                        .filter(|b| segment_of(b.start_lsn, seg_size) <= gap.2)
                        .map(|b| b.id.clone()),
                );
            }
        }
        for ((tli, a, b), (targets, affected)) in cut {
            let name = |s| segment_name(tli, s, seg_size);
            let forks: Vec<String> = targets
                .iter()
                .map(|t| match tree.parent(*t) {
                    Some((p, at)) => format!("timeline {t} (forked from timeline {p} at {at})"),
                    None => format!("timeline {t}"),
                })
                .collect();
            let mut p = Problem::new(
                ProblemKind::TimelineUnreachable,
                keys::wal_file(sysid, tli, &name(a)),
                format!(
                    "WAL segments {} – {} are missing: recovery from the backups before them \
                     cannot reach {}",
                    name(a),
                    name(b),
                    forks.join(", ")
                ),
            );
            p.backups = affected;
            self.problem(p);
        }
        for both in &survey.both_active {
            let [_, newer] = both.timelines;
            let name = WalFile::History { tli: newer }.name(seg_size);
            let w = Problem::new(
                ProblemKind::BothActive,
                keys::wal_file(sysid, newer, &name),
                both.describe(),
            );
            tracing::warn!("{}", w.detail);
            self.report.warnings.push(w);
        }
        Ok(())
    }
}

/// Whether a WAL object's opened payload is what its kind says: a summary parses, a streamed
/// piece holds as many bytes as its name's range.
fn opens_as(kind: ProblemKind, key: &str, payload: &[u8]) -> std::result::Result<(), StoreError> {
    match kind {
        ProblemKind::BadWalSummary => serde_json::from_slice::<SegmentSummary>(payload)
            .map(drop)
            .map_err(|e| StoreError::corrupt(key, e.to_string())),
        ProblemKind::BadStreamedWal => {
            let range = key
                .rsplit('/')
                .next()
                .and_then(crate::receive::piece::parse);
            match range {
                Some((start, end)) if payload.len() as u64 == u64::from(end - start) => Ok(()),
                _ => Err(StoreError::corrupt(
                    key,
                    format!("holds {} bytes, not what its name says", payload.len()),
                )),
            }
        }
        _ => Ok(()),
    }
}
