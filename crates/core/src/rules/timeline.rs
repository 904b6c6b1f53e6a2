//! A program's rules over time: versions, each in force from the instant
//! of event time its `[settings] effective_from` names until the next
//! one's. A bank announces "from 1 January, groceries pay 3%": the change
//! is a new version effective at that instant, and every event, replay and
//! instance picks the version by the event's own time, never by when the
//! version was loaded.
//!
//! A timeline is one rules file (one version), or a directory of them
//! (every `*.toml` in it). What state depends on stays the same across
//! versions: the currency, time zone, windows and event-time bounds, and
//! every program with its unit and decimals (a program may be added,
//! never removed).

use super::{Item, Problem, Rules, RulesError};
use crate::time::{Timestamp, TzOffset};
use std::path::Path;
use std::sync::Arc;

/// One version of a timeline.
#[derive(Debug, Clone)]
pub struct Version {
    /// `None` for the first version: in force from the beginning.
    pub from: Option<Timestamp>,
    pub rules: Arc<Rules>,
    /// The file it was read from.
    pub file: String,
}

/// The versions of a program, in order of their instants.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Never empty; the first has no instant, the others increasing ones.
    versions: Vec<Version>,
}

/// Which version a timeline names from which instant on, as the state
/// records it (`Timeline::record`).
pub type Recorded = Vec<(Option<Timestamp>, String)>;

impl From<Arc<Rules>> for Timeline {
    /// One version in force from the beginning (its `effective_from`, if
    /// any, has nothing before it to take over from).
    fn from(rules: Arc<Rules>) -> Timeline {
        Timeline { versions: vec![Version { from: None, rules, file: String::new() }] }
    }
}

impl Timeline {
    /// Loads a rules file (one version) or a directory of versions,
    /// reporting every problem of every file.
    pub fn load(path: &Path) -> Result<Timeline, RulesError> {
        if !path.is_dir() {
            let rules = super::load(path)?;
            let file = path.display().to_string();
            return Ok(Timeline { versions: vec![Version { from: None, rules: Arc::new(rules), file }] });
        }
        let dir = path.display().to_string();
        let entries =
            std::fs::read_dir(path).map_err(|source| RulesError::Read { file: dir.clone(), source })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| RulesError::Read { file: dir.clone(), source })?;
            let file = entry.path();
            if file.extension().is_some_and(|e| e == "toml") && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for file in &files {
            match super::load(file) {
                Ok(rules) => loaded.push((file.display().to_string(), rules)),
                Err(e) => errors.push(e),
            }
        }
        if files.is_empty() {
            errors.push(invalid(&dir, Item::File, "", "the directory holds no rules files (*.toml)"));
        }
        // How the versions that load fit together, with the problems of
        // those that do not: every problem in one run.
        match Timeline::fit(loaded, errors.is_empty()) {
            Ok(timeline) if errors.is_empty() => Ok(timeline),
            Ok(_) => Err(RulesError::Several(errors)),
            Err(RulesError::Several(more)) => {
                errors.extend(more);
                Err(RulesError::Several(errors))
            }
            Err(e) => {
                errors.push(e);
                Err(RulesError::Several(errors))
            }
        }
    }

    /// Orders versions by their instants and checks they fit together.
    pub fn of_versions(loaded: Vec<(String, Rules)>) -> Result<Timeline, RulesError> {
        Timeline::fit(loaded, true)
    }

    /// [`Timeline::of_versions`]; when some files did not load (`all`
    /// false), the first version may be among them, so its absence is not
    /// reported.
    fn fit(loaded: Vec<(String, Rules)>, all: bool) -> Result<Timeline, RulesError> {
        if loaded.is_empty() {
            return Err(RulesError::Several(Vec::new()));
        }
        let mut versions: Vec<Version> = loaded
            .into_iter()
            .map(|(file, rules)| Version { from: rules.effective_from, rules: Arc::new(rules), file })
            .collect();
        versions.sort_by(|a, b| (a.from, &a.file).cmp(&(b.from, &b.file)));
        let mut errors = Vec::new();
        let firsts: Vec<&str> =
            versions.iter().filter(|v| v.from.is_none()).map(|v| v.file.as_str()).collect();
        if firsts.len() > 1 || (firsts.is_empty() && all) {
            let message = match firsts.len() {
                0 => "no version leaves it out: the first version is in force from the beginning and has no \
                      effective_from"
                    .to_string(),
                _ => format!("only the first version leaves it out; so do {}", firsts.join(", ")),
            };
            let file = versions.first().map_or("", |v| v.file.as_str());
            errors.push(invalid(file, Item::Settings, "effective_from", &message));
        }
        for pair in versions.windows(2) {
            if let Err(e) = check_successor(&pair[0], &pair[1]) {
                errors.push(e);
            }
        }
        if errors.is_empty() { Ok(Timeline { versions }) } else { Err(RulesError::Several(errors)) }
    }

    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The first version: what every version shares (currency, windows,
    /// bounds, time zone, programs) is read from it.
    pub fn first(&self) -> &Arc<Rules> {
        &self.versions[0].rules
    }

    /// The index of the version in force at `at`.
    #[inline]
    pub fn index_at(&self, at: Timestamp) -> usize {
        if self.versions.len() == 1 {
            return 0;
        }
        self.versions.partition_point(|v| v.from.is_none_or(|from| from <= at)).saturating_sub(1)
    }

    /// The version in force at `at`.
    #[inline]
    pub fn at(&self, at: Timestamp) -> &Arc<Rules> {
        &self.versions[self.index_at(at)].rules
    }

    /// The instant the version after the one in force at `at` takes effect.
    pub fn next_change_after(&self, at: Timestamp) -> Option<Timestamp> {
        self.versions.get(self.index_at(at) + 1).and_then(|v| v.from)
    }

    /// Each version's instant and hash.
    pub fn recorded(&self) -> Recorded {
        self.versions.iter().map(|v| (v.from, v.rules.version.to_string())).collect()
    }

    /// Whether `next` may replace this timeline: it keeps the settings the
    /// state depends on, and every program of this one's last version.
    pub fn keeps(&self, next: &Timeline) -> Result<(), RulesError> {
        let mut problems = Vec::new();
        settings_kept(&self.versions[0], &next.versions[0], &mut problems);
        let (last, next_last) =
            (&self.versions[self.versions.len() - 1], &next.versions[next.versions.len() - 1]);
        programs_kept(last, next_last, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RulesError::Invalid { file: next_last.file.clone(), problems })
        }
    }

    /// What the state records of this timeline: each version's instant
    /// and version hash, one per line (`-` for the first).
    pub fn record(&self) -> String {
        let lines: Vec<String> = self
            .versions
            .iter()
            .map(|v| format!("{} {}", v.from.map_or("-".to_string(), |t| t.0.to_string()), v.rules.version))
            .collect();
        lines.join("\n")
    }

    /// Reads [`Timeline::record`] back; a store from before timelines
    /// holds one version hash, which reads as that version alone.
    pub fn parse_record(text: &str) -> Recorded {
        text.lines()
            .filter_map(|line| match line.split_once(' ') {
                Some(("-", version)) => Some((None, version.to_string())),
                Some((from, version)) => {
                    from.parse().ok().map(|ms| (Some(Timestamp(ms)), version.to_string()))
                }
                None if !line.is_empty() => Some((None, line.to_string())),
                None => None,
            })
            .collect()
    }

    /// The earliest instant at which this timeline and `recorded` name
    /// different versions (`None`: they agree at every instant). Changing
    /// a timeline is safe where this lies after every event applied.
    pub fn first_difference(&self, recorded: &Recorded) -> Option<Timestamp> {
        let mine = self.recorded();
        fn at(timeline: &Recorded, t: Timestamp) -> Option<&str> {
            timeline.iter().rev().find(|(from, _)| from.is_none_or(|f| f <= t)).map(|(_, v)| v.as_str())
        }
        let mut instants: Vec<Timestamp> = std::iter::once(Timestamp(i64::MIN))
            .chain(mine.iter().chain(recorded).filter_map(|(from, _)| *from))
            .collect();
        instants.sort();
        instants.into_iter().find(|&t| at(&mine, t) != at(recorded, t))
    }

    /// The version hash, or for several versions each with its instant.
    pub fn label(&self) -> String {
        let parts: Vec<String> = self
            .versions
            .iter()
            .map(|v| match v.from {
                None => v.rules.version.to_string(),
                Some(t) => format!("{} from {}", v.rules.version, local_text(t, &v.rules.timezone)),
            })
            .collect();
        parts.join(", ")
    }

    /// The timeline as `check-config` shows it: each version's instant (in
    /// the program's time zone and UTC), file and version hash.
    pub fn describe(&self) -> String {
        let mut out = String::from("  timeline:\n");
        for v in &self.versions {
            let from = match v.from {
                None => "from the beginning".to_string(),
                Some(t) => format!("from {} ({t})", local_text(t, &v.rules.timezone)),
            };
            out.push_str(&format!("    {from}: version {} ({})\n", v.rules.version, v.file));
        }
        out
    }
}

/// `at` as local time in `zone`, with its offset.
pub fn local_text(at: Timestamp, zone: &TzOffset) -> String {
    let offset = zone.offset_at(at);
    let local = Timestamp(at.0 + i64::from(offset) * 1000).to_string();
    let local = local.strip_suffix('Z').unwrap_or(&local);
    let sign = if offset < 0 { '-' } else { '+' };
    let minutes = offset.unsigned_abs() / 60;
    format!("{local}{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

fn invalid(file: &str, item: Item, field: &str, message: &str) -> RulesError {
    RulesError::Invalid {
        file: file.to_string(),
        problems: vec![Problem { item, field: field.to_string(), message: message.to_string() }],
    }
}

/// A later version keeps what the state depends on, and its instant
/// follows the earlier one's.
fn check_successor(earlier: &Version, later: &Version) -> Result<(), RulesError> {
    let mut problems = Vec::new();
    settings_kept(earlier, later, &mut problems);
    programs_kept(earlier, later, &mut problems);
    if earlier.from.is_some() && earlier.from == later.from {
        let at = later.from.map_or_else(String::new, |t| t.to_string());
        problems.push(Problem {
            item: Item::Settings,
            field: "effective_from".to_string(),
            message: format!("{at} is also the instant of {}", earlier.file),
        });
    }
    if problems.is_empty() { Ok(()) } else { Err(RulesError::Invalid { file: later.file.clone(), problems }) }
}

/// The settings the state depends on are the same in `later`.
fn settings_kept(earlier: &Version, later: &Version, problems: &mut Vec<Problem>) {
    let (a, b) = (&*earlier.rules, &*later.rules);
    let mut differs = |field: &str, was: String, is: String| {
        if was != is {
            problems.push(Problem {
                item: Item::Settings,
                field: field.to_string(),
                message: format!(
                    "is {is} here but {was} in {}: every version of a program keeps it (the state depends on it)",
                    earlier.file
                ),
            });
        }
    };
    let minutes = |ms: i64| (ms / 60_000).to_string();
    differs("name", format!("{:?}", a.name), format!("{:?}", b.name));
    differs("currency", a.currency.clone(), b.currency.clone());
    differs("timezone", a.timezone.to_string(), b.timezone.to_string());
    differs("refund_window_days", days(a.refund_window_ms), days(b.refund_window_ms));
    differs("dedupe_window_days", days(a.dedupe_window_ms), days(b.dedupe_window_ms));
    differs("max_event_ahead_minutes", minutes(a.max_event_ahead_ms), minutes(b.max_event_ahead_ms));
    differs("max_event_delay_days", days(a.max_event_delay_ms), days(b.max_event_delay_ms));
    differs(
        "max_accounts_per_clock",
        a.max_accounts_per_clock.to_string(),
        b.max_accounts_per_clock.to_string(),
    );
    differs("statement_day", a.statement_day.to_string(), b.statement_day.to_string());
}

/// Every program of `earlier` is in `later`, with the same kind, unit and
/// decimals (balances keep them).
fn programs_kept(earlier: &Version, later: &Version, problems: &mut Vec<Problem>) {
    for p in &earlier.rules.programs {
        let message = match later.rules.program(&p.name) {
            None => format!(
                "is missing: it is in {} and balances keep it (a program may be added, never removed)",
                earlier.file
            ),
            Some(q) if q.kind == p.kind && q.unit == p.unit && q.decimals == p.decimals => continue,
            Some(_) => format!(
                "changes its kind, unit or decimals from {}: balances keep them (add a program instead)",
                earlier.file
            ),
        };
        problems.push(Problem { item: Item::Program(p.name.to_string()), field: String::new(), message });
    }
}

fn days(ms: i64) -> String {
    (ms / crate::time::MS_PER_DAY).to_string()
}
