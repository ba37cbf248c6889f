//! `pgsnapfs metrics` (issue 20, section 4) and the `--json` schemas of docs/json.md, on one
//! cluster in sequence, on a local repository and on S3: a backup, WAL pushed, a backup from
//! the archive, a refused backup and a failed one, a check, a verify and a gc; then `metrics`
//! must parse as Prometheus exposition format (a strict parser below) with values equal to
//! `info --json`'s; a WAL gap made by hand shows in both (local only); `metrics --listen`
//! serves the same over HTTP and stops on SIGTERM with exit 0. The JSON every command printed
//! on the way must hold the fields docs/json.md lists for it, and nothing it does not list.

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

/// One sample: family name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format strictly: every line is a HELP, a TYPE or a sample;
/// HELP and TYPE come once per family, before its samples, which are contiguous; names and
/// label names are valid; label values are quoted with only `\\`, `\"` and `\n` escapes; no
/// sample is repeated; the text ends with a newline. Returns the samples, and the families
/// with their TYPE.
fn parse_exposition(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
    fn valid_name(n: &str, colon: bool) -> bool {
        let mut chars = n.chars();
        let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
        chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
    }
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut samples: Vec<Sample> = Vec::new();
    let mut types = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text"))?;
            if !valid_name(name, true) || help.trim().is_empty() || !helped.insert(name.to_string())
            {
                return Err(at("bad or repeated HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type"))?;
            let known = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !known.contains(&kind) || types.insert(name.to_string(), kind.to_string()).is_some()
            {
                return Err(at("bad or repeated TYPE"));
            }
            if finished.contains(name) || samples.iter().any(|s| s.name == name) {
                return Err(at("TYPE after the family's samples"));
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            return Err(at("comment or blank line (this writer makes none)"));
        }
        // name{labels} value
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without value"))?;
        let name = &line[..name_end];
        if !valid_name(name, true) {
            return Err(at("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end = loop {
                // label name
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .ok_or_else(|| at("open labels"))?;
                if body[start..].starts_with('}') {
                    break start + 1;
                }
                let eq = body[start..]
                    .find('=')
                    .ok_or_else(|| at("label without ="))?
                    + start;
                let lname = &body[start..eq];
                if !valid_name(lname, false) {
                    return Err(at("bad label name"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(at("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => return Err(at("bad escape")),
                        },
                        Some('"') => break,
                        Some('\n') | None => return Err(at("unterminated label value")),
                        Some(c) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(at("repeated label"));
                }
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => break i + 1,
                    _ => return Err(at("labels not separated by commas")),
                }
            };
            rest = &body[end..];
        }
        let value_text = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value"))?;
        let mut parts = value_text.split(' ');
        let value: f64 = match parts.next() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some(v) => v.parse().map_err(|_| at("value is not a number"))?,
            None => return Err(at("no value")),
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp"))?;
        }
        if parts.next().is_some() {
            return Err(at("trailing fields"));
        }
        if name != current {
            if finished.contains(name) {
                return Err(at("the family's samples are not together"));
            }
            if !current.is_empty() {
                finished.insert(current.clone());
            }
            current = name.to_string();
        }
        if !types.contains_key(name) || !helped.contains(name) {
            return Err(at("sample before its family's HELP and TYPE"));
        }
        let sample = Sample {
            name: name.to_string(),
            labels,
            value,
        };
        if samples
            .iter()
            .any(|s| s.name == sample.name && s.labels == sample.labels)
        {
            return Err(at("repeated sample"));
        }
        samples.push(sample);
    }
    Ok((samples, types))
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_b x y\n# TYPE a_b gauge\na_b{l=\"q\\\"\\\\\\n\",m=\"\"} 1.5\na_b 2\n";
    let (samples, types) = parse_exposition(good).unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].labels["l"], "q\"\\\n");
    assert_eq!(types["a_b"], "gauge");
    for bad in [
        "a 1\n",                                        // no HELP/TYPE
        "# HELP a x\n# TYPE a gauge\na 1",              // no final newline
        "# HELP a x\n# TYPE a gauge\na{l=q} 1\n",       // unquoted
        "# HELP a x\n# TYPE a gauge\na{l=\"\\t\"} 1\n", // bad escape
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",       // repeated
        "# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n",
        "# HELP a x\n# TYPE a gauge\na one\n", // not a number
        "# HELP a x\n# TYPE a gauge\n# TYPE a gauge\na 1\n", // repeated TYPE
        "# HELP 1a x\n# TYPE 1a gauge\n1a 1\n", // bad name
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// The value of the one sample of `name` whose labels include `labels`.
#[track_caller]
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in {samples:#?}");
    found[0].value
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

fn time(v: &Value) -> f64 {
    let t: DateTime<Utc> = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a time"))
        .parse()
        .unwrap_or_else(|e| panic!("{v}: {e}"));
    t.timestamp_millis() as f64 / 1000.0
}

/// The segment number of a segment name (16 MiB segments).
fn segno(name: &str) -> f64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    (log * 256 + seg) as f64
}

/// The metrics against `info --json`: backups, sizes, WAL, gaps, restorable range.
fn assert_matches_info(samples: &[Sample], info: &Value, sys: &str) {
    let backups = info["backups"].as_array().unwrap();
    let sys_l = ("system", sys);
    assert_eq!(
        value(samples, "pgsnapfs_backups", &[sys_l]),
        backups.len() as f64
    );
    for source in ["server", "archive"] {
        let newest = backups
            .iter()
            .filter(|b| b["source"] == source)
            .max_by(|a, b| time(&a["stop_time"]).total_cmp(&time(&b["stop_time"])))
            .unwrap_or_else(|| panic!("no {source} backup in {info}"));
        let l = [sys_l, ("source", source)];
        assert_eq!(
            value(samples, "pgsnapfs_backup_last_timestamp_seconds", &l),
            time(&newest["stop_time"])
        );
        assert_eq!(
            value(samples, "pgsnapfs_backup_last_size_bytes", &l),
            newest["size_logical"].as_u64().unwrap() as f64
        );
        assert_eq!(
            value(samples, "pgsnapfs_backup_last_stored_new_bytes", &l),
            newest["size_stored_new"].as_u64().unwrap() as f64
        );
    }
    let range = info["restorable_by_system"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["system_identifier"] == sys)
        .unwrap();
    assert_eq!(
        value(
            samples,
            "pgsnapfs_restorable_oldest_timestamp_seconds",
            &[sys_l]
        ),
        time(&range["earliest_time"])
    );
    assert_eq!(
        value(
            samples,
            "pgsnapfs_restorable_newest_timestamp_seconds",
            &[sys_l]
        ),
        time(&range["latest_time"])
    );
    let wal: Vec<&Value> = info["wal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["system_identifier"] == sys)
        .collect();
    let newest = wal
        .iter()
        .filter(|w| !w["last"].is_null())
        .max_by_key(|w| w["timeline"].as_u64())
        .unwrap();
    let tli = newest["timeline"].to_string();
    assert_eq!(
        value(
            samples,
            "pgsnapfs_wal_last_segment",
            &[sys_l, ("timeline", &tli)]
        ),
        segno(newest["last"].as_str().unwrap())
    );
    let gaps: usize = wal
        .iter()
        .map(|w| w["gaps"].as_array().unwrap().len())
        .sum();
    assert_eq!(value(samples, "pgsnapfs_wal_gaps", &[sys_l]), gaps as f64);
    let missing: f64 = wal
        .iter()
        .flat_map(|w| w["gaps"].as_array().unwrap())
        .map(|g| segno(g["to"].as_str().unwrap()) - segno(g["from"].as_str().unwrap()) + 1.0)
        .sum();
    assert_eq!(
        value(samples, "pgsnapfs_wal_missing_segments", &[sys_l]),
        missing
    );
}

/// `metrics --listen 127.0.0.1:0` as postgres; the address it printed.
fn listen(repo: &Repo) -> (std::process::Child, String) {
    let mut child = pgsnapfs_command(&repo.args("metrics", &["--listen", "127.0.0.1:0"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start metrics --listen");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("pgsnapfs: serving metrics on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr = url.strip_suffix("/metrics").unwrap().to_string();
    (child, addr)
}

/// A GET of `path`: status line and body.
fn get(addr: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_string();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_string();
    (status, ctype, body.to_string())
}

/// The fields docs/json.md lists per command: `### \`pgsnapfs CMD --json\`` headings, each
/// followed by `- \`path\`` items (nested paths as `a.b`, array elements as `a[].b`); an item
/// whose text starts with "(optional)" may be absent.
fn documented() -> BTreeMap<String, Vec<(String, bool)>> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md"))
        .expect("read docs/json.md");
    let mut out: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### `pgsnapfs ") {
            current = h.strip_suffix(" --json`").map(str::to_string);
            continue;
        }
        if line.starts_with('#') {
            current = None;
        }
        if let (Some(cmd), Some(item)) = (&current, line.strip_prefix("- `")) {
            let (path, rest) = item.split_once('`').expect("- `path` text");
            let optional = rest.trim_start().starts_with("(optional)");
            out.entry(cmd.clone())
                .or_default()
                .push((path.to_string(), optional));
        }
    }
    out
}

/// The values at `path` (`a.b`, `a[].b`) in `v`: several through arrays, none if absent.
fn at_path<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut here = vec![v];
    for part in path.split('.') {
        let (key, each) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        let mut next = Vec::new();
        for h in here {
            let Some(x) = (if key.is_empty() { Some(h) } else { h.get(key) }) else {
                continue;
            };
            match (each, x.as_array()) {
                (true, Some(items)) => next.extend(items.iter()),
                (true, None) => {}
                (false, _) => next.push(x),
            }
        }
        here = next;
    }
    here
}

/// Every path of `v` in the doc's notation, objects and array elements included.
fn paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(x, &p, out);
            }
        }
        Value::Array(items) => {
            for x in items {
                paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// Each command's JSON holds every field the doc lists for it (unless optional), and every
/// field it prints is listed, down to the levels the doc describes.
fn assert_documented(outputs: &BTreeMap<&str, Vec<Value>>) {
    let doc = documented();
    for (cmd, runs) in outputs {
        let fields = doc
            .get(*cmd)
            .unwrap_or_else(|| panic!("docs/json.md has no section for `pgsnapfs {cmd} --json`"));
        let listed: BTreeSet<&str> = fields.iter().map(|(p, _)| p.as_str()).collect();
        for v in runs {
            for (path, optional) in fields {
                let found = !at_path(v, path).is_empty();
                // A field of an absent object (optional, null) or of an empty array's
                // elements cannot be there: only its parent is required.
                let parent_empty = path
                    .rsplit_once('.')
                    .is_some_and(|(parent, _)| at_path(v, parent).iter().all(|x| x.is_null()));
                assert!(
                    found || *optional || parent_empty,
                    "`pgsnapfs {cmd} --json` lacks the documented field {path}: {v:#}"
                );
            }
            let mut printed = BTreeSet::new();
            paths(v, "", &mut printed);
            // A listed field with no listed fields inside is described as a whole (e.g.
            // `requests`); inside any other, every field must be listed.
            let opaque = |l: &str| {
                !listed
                    .iter()
                    .any(|x| x.starts_with(&format!("{l}.")) || x.starts_with(&format!("{l}[].")))
            };
            for p in &printed {
                let covered = listed.contains(p.as_str())
                    || listed.iter().any(|l| {
                        (p.starts_with(&format!("{l}.")) || p.starts_with(&format!("{l}[].")))
                            && opaque(l)
                    });
                assert!(
                    covered,
                    "`pgsnapfs {cmd} --json` prints {p}, which docs/json.md does not list"
                );
            }
        }
    }
}

/// A gap: more WAL, then a segment in the middle taken out of the archive by hand; `metrics`
/// shows it as `info --json` does. Returns the samples.
fn gap_shows(repo: &Repo, source: &mut Cluster, sys: &str) -> Vec<Sample> {
    let mut segs = Vec::new();
    for _ in 0..3 {
        source.psql("CREATE TABLE IF NOT EXISTS w(x int); INSERT INTO w VALUES (1)");
        segs.push(source.switch_wal_and_wait_archived());
    }
    source.stop();
    let hole = repo.path.join(format!("wal/{sys}/00000001/{}", segs[1]));
    std::fs::remove_file(&hole).unwrap_or_else(|e| panic!("{}: {e}", hole.display()));
    let info = repo.run("info", &["--json"]).assert_ok().json();
    let text = repo.run("metrics", &[]).assert_ok().stdout_str();
    let (samples, _) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_matches_info(&samples, &info, sys);
    let sys_l = ("system", sys);
    assert_eq!(
        value(&samples, "pgsnapfs_wal_gaps", &[sys_l]),
        1.0,
        "{segs:?} {:?} {:#}",
        repo.keys("wal/"),
        info["wal"]
    );
    assert_eq!(
        value(&samples, "pgsnapfs_wal_missing_segments", &[sys_l]),
        1.0
    );
    samples
}

on_both_stores!(metrics_match_info_and_json_keeps_its_documented_fields);

fn metrics_match_info_and_json_keeps_its_documented_fields(store: Store) {
    let started = Instant::now();
    let test_start = Utc::now().timestamp() as f64;
    let repo = Repo::init_on(store);
    let mut source = Cluster::archiving_to(&repo.spec);
    let sys = source.system_identifier();
    let mut outputs: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    source
        .psql("CREATE TABLE t(id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)");
    outputs
        .entry("backup")
        .or_default()
        .push(repo.backup(&source));
    source.psql("INSERT INTO t SELECT generate_series(1001, 2000)");
    let seg = source.switch_wal_and_wait_archived();

    // wal-push --json of a segment already archived: its outcome, nothing written.
    let pushed = pgsnapfs_in(
        &source.data,
        &repo.args("wal-push", &["--json", &format!("pg_wal/{seg}")]),
    );
    outputs
        .entry("wal-push")
        .or_default()
        .push(pushed.assert_ok().json());

    let mut from_archive = repo.args("backup", &["--from-archive", "--json"]);
    if test_major() != 15 {
        from_archive.extend(["--pg-bin".into(), test_server_bin().display().to_string()]);
    }
    let made = pgsnapfs_as_root(&from_archive).assert_ok().json();
    assert_eq!(made["source"], "archive", "{made}");
    outputs.entry("backup").or_default().push(made);

    // A backup refused before it writes (no server on that port) leaves the repository
    // alone, status included; one that fails after taking its lease (a role that may not
    // start a backup) is recorded as failed. The last successful backup's figures stay.
    let mut refused: Vec<String> = source.backup_args();
    let port = refused.iter().position(|a| a == "-p").expect("-p PORT");
    refused[port + 1] = free_port().to_string();
    let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
    repo.run("backup", &refused).assert_exit(1);
    let text = repo.run("metrics", &[]).assert_ok().stdout_str();
    let (samples, _) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = [("system", sys.as_str()), ("source", "server")];
    assert_eq!(
        value(&samples, "pgsnapfs_backup_last_run_success", &server),
        1.0
    );
    source.psql("CREATE ROLE nobackup LOGIN; GRANT pg_read_all_settings TO nobackup");
    let mut denied: Vec<String> = source.backup_args();
    let user = denied.iter().position(|a| a == "-U").expect("-U USER");
    denied[user + 1] = "nobackup".into();
    let denied: Vec<&str> = denied.iter().map(String::as_str).collect();
    repo.run("backup", &denied)
        .assert_failed()
        .assert_mentions("pg_backup_start");

    let check = repo.run("check", &["--json"]).assert_ok().json();
    outputs.entry("check").or_default().push(check);
    let verify = pgsnapfs_as_root(&repo.args("verify", &["--json"]))
        .assert_ok()
        .json();
    assert_eq!(verify["ok"], true, "{verify}");
    outputs.entry("verify").or_default().push(verify.clone());
    let gc = repo.run("gc", &["--json"]).assert_ok().json();
    outputs.entry("gc").or_default().push(gc.clone());
    outputs.entry("expire").or_default().push(
        repo.run("expire", &["--keep-last", "5", "--dry-run", "--json"])
            .assert_ok()
            .json(),
    );
    outputs
        .entry("locks")
        .or_default()
        .push(repo.run("locks", &["--json"]).assert_ok().json());
    outputs
        .entry("list")
        .or_default()
        .push(repo.run("list", &["--json"]).assert_ok().json());
    let copy_to = TestDir::new("copy");
    let to = copy_to.join("repo");
    pgsnapfs(&["init", "--repo", to.to_str().unwrap()]).assert_ok();
    outputs.entry("copy").or_default().push(
        pgsnapfs(&[
            "copy",
            "--from",
            &repo.spec,
            "--to",
            to.to_str().unwrap(),
            "--wal",
            "--json",
        ])
        .assert_ok()
        .json(),
    );

    let info = repo.run("info", &["--json"]).assert_ok().json();
    outputs.entry("info").or_default().push(info.clone());
    let text = repo.run("metrics", &[]).assert_ok().stdout_str();
    let (samples, types) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        types.keys().all(|n| n.starts_with("pgsnapfs_")),
        "{types:?}"
    );
    assert!(types.values().all(|t| t == "gauge"), "{types:?}");
    assert_matches_info(&samples, &info, &sys);
    let now = Utc::now().timestamp() as f64 + 1.0;
    let sys_l = ("system", sys.as_str());
    // The failed backup is the last run of `backup`; --from-archive's succeeded.
    assert_eq!(
        value(&samples, "pgsnapfs_backup_last_run_success", &server),
        0.0
    );
    let archive = [sys_l, ("source", "archive")];
    assert_eq!(
        value(&samples, "pgsnapfs_backup_last_run_success", &archive),
        1.0
    );
    let ran = value(
        &samples,
        "pgsnapfs_backup_last_run_timestamp_seconds",
        &server,
    );
    assert!(ran >= test_start && ran <= now, "{ran}");
    // The segment pushed above was archived during the test, and is not newer than now.
    let pushed_at = value(
        &samples,
        "pgsnapfs_wal_last_archived_timestamp_seconds",
        &[sys_l],
    );
    assert!(
        pushed_at >= test_start && pushed_at <= now,
        "{pushed_at} {test_start}"
    );
    let age = value(&samples, "pgsnapfs_wal_last_archived_age_seconds", &[sys_l]);
    assert!(age >= 0.0 && age <= now - test_start, "{age}");
    // check and verify passed, during the test.
    assert_eq!(value(&samples, "pgsnapfs_check_last_success", &[]), 1.0);
    assert_eq!(value(&samples, "pgsnapfs_check_last_problems", &[]), 0.0);
    assert_eq!(value(&samples, "pgsnapfs_check_last_read_data", &[]), 0.0);
    let checked = value(&samples, "pgsnapfs_check_last_timestamp_seconds", &[]);
    assert!(checked >= test_start && checked <= now, "{checked}");
    assert_eq!(
        value(&samples, "pgsnapfs_verify_last_success", &[sys_l]),
        1.0
    );
    let p = &verify["phases"];
    let first_query = value(
        &samples,
        "pgsnapfs_verify_last_first_query_seconds",
        &[sys_l],
    );
    let phases: f64 = ["mount_s", "start_s", "recovery_s"]
        .iter()
        .map(|k| p[k].as_f64().unwrap())
        .sum();
    assert!((first_query - phases).abs() < 0.01, "{first_query} {p}");
    let took = value(&samples, "pgsnapfs_verify_last_duration_seconds", &[sys_l]);
    assert!(
        took >= first_query && took <= now - test_start,
        "{took} {first_query}"
    );
    // gc's figures: the packs it left, plus nothing stored since.
    let packs = value(&samples, "pgsnapfs_repository_packs_bytes", &[]);
    let gc_left = gc["bytes_before"].as_u64().unwrap() + gc["written_bytes"].as_u64().unwrap()
        - gc["freed_bytes"].as_u64().unwrap();
    assert_eq!(packs, gc_left as f64);
    let on_disk: u64 = repo.objects("packs/").iter().map(|(_, n)| n).sum();
    assert_eq!(packs, on_disk as f64);
    assert_eq!(
        value(&samples, "pgsnapfs_repository_reclaimable_bytes", &[]),
        0.0
    );
    assert_eq!(value(&samples, "pgsnapfs_wal_gaps", &[sys_l]), 0.0);

    // The harness deletes no S3 object: the gap is made in a local repository only.
    let samples = match store {
        Store::Local => gap_shows(&repo, &mut source, &sys),
        Store::S3 => samples,
    };

    // The same over HTTP; then SIGTERM ends the server with exit 0.
    let (mut child, addr) = listen(&repo);
    let (status, ctype, body) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let (served, _) = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let stable = |s: &[Sample]| -> Vec<(String, BTreeMap<String, String>, f64)> {
        s.iter()
            .filter(|x| !x.name.ends_with("_age_seconds") && !x.name.contains("generated"))
            .map(|x| (x.name.clone(), x.labels.clone(), x.value))
            .collect()
    };
    assert_eq!(stable(&served), stable(&samples));
    assert!(has(&served, "pgsnapfs_backup_last_age_seconds"));
    assert_eq!(get(&addr, "/other").0, "HTTP/1.1 404 Not Found");
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");

    if let Ok(dir) = std::env::var("PGSNAPFS_DUMP_JSON") {
        for (cmd, runs) in &outputs {
            std::fs::write(
                Path::new(&dir).join(format!("{cmd}.json")),
                serde_json::to_string_pretty(runs).unwrap(),
            )
            .unwrap();
        }
    }
    assert_documented(&outputs);
    eprintln!("metrics scenario took {:?}", started.elapsed());
}
