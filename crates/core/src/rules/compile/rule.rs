//! The rules themselves: effects, caps, exclusive groups and the order
//! they are evaluated in.

use super::conditions::compile_conditions;
use super::{Problems, check_name, positive};
use crate::rules::file::*;
use crate::rules::{Cap, Effect, Group, Item, Program, Rounding, Rule, Tier};
use crate::time::TzOffset;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The caps, each one's place by name, and the program each is limited to.
pub(super) struct CapTables<'d> {
    pub(super) caps: Vec<Cap>,
    pub(super) index: HashMap<&'d str, usize>,
    pub(super) program: Vec<Option<usize>>,
}

pub(super) fn compile_caps<'d>(
    def: &'d RulesFile,
    program_index: &HashMap<&str, usize>,
    problems: &mut Problems,
) -> CapTables<'d> {
    let mut caps = Vec::new();
    let mut cap_index = HashMap::new();
    let mut cap_program = Vec::new();
    for (name, c) in &def.caps {
        let item = Item::Cap(name.clone());
        check_name(name, &item, "name", problems);
        positive(c.limit.0, &item, "limit", problems);
        let program = c.program.as_ref().and_then(|p| {
            let found = program_index.get(p.as_str()).copied();
            if found.is_none() {
                problems.add(&item, "program", format!("unknown program \"{p}\""));
            }
            found
        });
        cap_index.insert(name.as_str(), caps.len());
        cap_program.push(program);
        caps.push(Cap {
            id: Arc::from(name.as_str()),
            limit: c.limit.0,
            period: c.period,
            measure: c.measure,
            description: c.description.as_deref().map(Arc::from),
        });
    }
    CapTables { caps, index: cap_index, program: cap_program }
}

/// Each rule's place by id; two rules with one id are a problem.
pub(super) fn rule_index<'d>(def: &'d RulesFile, problems: &mut Problems) -> HashMap<&'d str, usize> {
    let mut rule_index = HashMap::new();
    for (i, r) in def.rules.iter().enumerate() {
        let item = Item::Rule(r.id.clone());
        check_name(&r.id, &item, "id", problems);
        if rule_index.insert(r.id.as_str(), i).is_some() {
            problems.add(&item, "id", "another rule has the same id");
        }
    }
    rule_index
}

/// What a rule may refer to, compiled before the rules.
pub(super) struct Tables<'d, 't> {
    pub(super) def: &'d RulesFile,
    pub(super) timezone: &'t TzOffset,
    pub(super) programs: &'t [Program],
    pub(super) program_index: &'t HashMap<&'d str, usize>,
    pub(super) category_index: &'t HashMap<&'d str, usize>,
    pub(super) partner_index: &'t HashMap<&'d str, usize>,
    pub(super) tiers: &'t [Tier],
    pub(super) caps: &'t CapTables<'d>,
    pub(super) rule_index: HashMap<&'d str, usize>,
}

/// One rule; `None` if its program is unknown (reported).
pub(super) fn compile_rule(r: &RuleDef, t: &Tables<'_, '_>, problems: &mut Problems) -> Option<Rule> {
    let item = Item::Rule(r.id.clone());
    let Some(&program) = t.program_index.get(r.program.as_str()) else {
        problems.add(&item, "program", format!("unknown program \"{}\"", r.program));
        return None;
    };
    let when =
        compile_conditions(&r.when, t.timezone, &item, t.category_index, t.partner_index, t.tiers, problems);
    let effect = compile_effect(r, t, &item, problems);
    let decimals = t.programs[program].decimals;
    let step = r.rounding.step.map_or_else(|| Decimal::new(1, decimals), |s| s.0);
    positive(step, &item, "rounding.step", problems);
    if step.normalize().scale() > decimals {
        problems.add(
            &item,
            "rounding.step",
            format!("{step} is finer than program \"{}\" keeps ({decimals} decimal places)", r.program),
        );
    }
    if let Some(unit) = r.rounding.per_full {
        positive(unit.0, &item, "rounding.per_full", problems);
    }
    let caps = rule_caps(r, program, t.caps, &item, problems);
    if let Some(g) = &r.group {
        check_name(g, &item, "group", problems);
    }
    Some(Rule {
        id: Arc::from(r.id.as_str()),
        program,
        priority: r.priority,
        group: None,
        when,
        effect,
        rounding: Rounding { mode: r.rounding.mode, step, per_full: r.rounding.per_full.map(|u| u.0) },
        caps,
    })
}

fn compile_effect(r: &RuleDef, t: &Tables<'_, '_>, item: &Item, problems: &mut Problems) -> Effect {
    match &r.effect {
        EffectDef::Percent(p) => {
            if p.0 <= Decimal::ZERO || p.0 > Decimal::ONE_HUNDRED {
                problems.add(item, "effect.percent", format!("must be above 0 and at most 100, got {}", p.0));
            }
            Effect::Percent { percent: p.0, fraction: p.0 / Decimal::ONE_HUNDRED }
        }
        EffectDef::Fixed(v) => {
            positive(v.0, item, "effect.fixed", problems);
            Effect::Fixed(v.0)
        }
        EffectDef::PerUnit { every, award } => {
            positive(every.0, item, "effect.per_unit.every", problems);
            positive(award.0, item, "effect.per_unit.award", problems);
            Effect::PerUnit { every: every.0, award: award.0 }
        }
        EffectDef::Multiply { rule, factor } => {
            if factor.0 <= Decimal::ONE {
                problems.add(
                    item,
                    "effect.multiply.factor",
                    format!("must be greater than 1, got {}", factor.0),
                );
            }
            let target = t.rule_index.get(rule.as_str()).copied();
            let rules = &t.def.rules;
            match target {
                None => problems.add(item, "effect.multiply.rule", format!("unknown rule \"{rule}\"")),
                Some(i) if rules[i].id == r.id => {
                    problems.add(item, "effect.multiply.rule", "a rule cannot multiply itself")
                }
                Some(i) if rules[i].program != r.program => problems.add(
                    item,
                    "effect.multiply.rule",
                    format!(
                        "rule \"{rule}\" pays into program \"{}\", not \"{}\"",
                        rules[i].program, r.program
                    ),
                ),
                Some(_) => {}
            }
            if r.group.is_some() {
                problems.add(item, "group", "a multiply rule cannot be in an exclusive group");
            }
            Effect::Multiply { rule: target.unwrap_or(usize::MAX), factor: factor.0 }
        }
    }
}

/// The caps a rule counts against: those it names, and those limited to
/// its program (a spend cap only where the effect is computed from the
/// amount), in cap order.
fn rule_caps(
    r: &RuleDef,
    program: usize,
    caps: &CapTables<'_>,
    item: &Item,
    problems: &mut Problems,
) -> Vec<usize> {
    let mut rule_caps = Vec::new();
    for name in &r.caps {
        match caps.index.get(name.as_str()) {
            None => problems.add(item, "caps", format!("unknown cap \"{name}\"")),
            Some(&c) => {
                if caps.program[c].is_some_and(|p| p != program) {
                    problems.add(item, "caps", format!("cap \"{name}\" belongs to another program"));
                }
                let spend = caps.caps[c].measure == CapMeasure::Spend;
                if spend && matches!(r.effect, EffectDef::Fixed(_) | EffectDef::Multiply { .. }) {
                    problems.add(
                        item,
                        "caps",
                        format!("spend cap \"{name}\" needs an effect computed from the amount (percent or per_unit)"),
                    );
                }
                rule_caps.push(c);
            }
        }
    }
    for (c, p) in caps.program.iter().enumerate() {
        let spend_mismatch = caps.caps[c].measure == CapMeasure::Spend
            && matches!(r.effect, EffectDef::Fixed(_) | EffectDef::Multiply { .. });
        if *p == Some(program) && !rule_caps.contains(&c) && !spend_mismatch {
            rule_caps.push(c);
        }
    }
    rule_caps.sort_unstable();
    rule_caps
}

/// A reward cap adds up amounts of one unit: its rules share a program,
/// and what is left of it is paid out, so it must be payable.
pub(super) fn check_caps(caps: &[Cap], rules: &[Rule], programs: &[Program], problems: &mut Problems) {
    for (c, cap) in caps.iter().enumerate() {
        let programs_using: BTreeSet<usize> =
            rules.iter().filter(|r| r.caps.contains(&c)).map(|r| r.program).collect();
        if programs_using.len() > 1 {
            problems.add(
                &Item::Cap(cap.id.to_string()),
                "program",
                "rules of different programs use this cap",
            );
        }
        // What is left of a reward cap is paid out: it must be payable.
        if let (CapMeasure::Reward, Some(&p)) = (cap.measure, programs_using.first()) {
            if cap.limit.normalize().scale() > programs[p].decimals {
                problems.add(
                    &Item::Cap(cap.id.to_string()),
                    "limit",
                    format!(
                        "{} has more decimal places than program \"{}\" keeps",
                        cap.limit, programs[p].name
                    ),
                );
            }
        }
    }
}

/// Puts the rules in evaluation order and gathers the exclusive groups,
/// each with its members highest priority first (once a member pays,
/// lower ones cannot win).
pub(super) fn exclusive_groups(
    mut rules: Vec<Rule>,
    group_names: &[Option<Arc<str>>],
    problems: &mut Problems,
) -> Option<(Vec<Rule>, Vec<Group>)> {
    let mut group_programs: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (r, g) in rules.iter().zip(group_names) {
        if let Some(g) = g {
            group_programs.entry(g).or_default().insert(r.program);
        }
    }
    for (group, programs_in) in &group_programs {
        if programs_in.len() > 1 {
            let first = rules.iter().zip(group_names).find(|(_, g)| g.as_deref() == Some(*group));
            problems.add(
                &Item::Rule(first.map(|(r, _)| r.id.to_string()).unwrap_or_default()),
                "group",
                format!(
                    "exclusive group \"{group}\" mixes programs; values of different units cannot be compared"
                ),
            );
        }
    }
    let mut groups: Vec<Group> =
        group_programs.keys().map(|name| Group { name: Arc::from(*name), members: Vec::new() }).collect();
    for (rule, name) in rules.iter_mut().zip(group_names) {
        rule.group = name.as_deref().and_then(|n| groups.iter().position(|g| &*g.name == n));
    }

    let rules = evaluation_order(rules, problems)?;
    for (i, rule) in rules.iter().enumerate() {
        if let Some(g) = rule.group {
            groups[g].members.push(i);
        }
    }
    // Highest priority first: once a member pays, lower ones cannot win.
    for group in &mut groups {
        group.members.sort_by_key(|&m| std::cmp::Reverse(rules[m].priority));
    }
    if !problems.0.is_empty() {
        return None;
    }
    Some((rules, groups))
}

/// Orders rules so a multiplied rule comes before its multiplier; otherwise
/// by priority (high first), then id. Reports cycles.
fn evaluation_order(rules: Vec<Rule>, problems: &mut Problems) -> Option<Vec<Rule>> {
    let n = rules.len();
    let mut waiting_on = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in rules.iter().enumerate() {
        if let Effect::Multiply { rule, .. } = r.effect {
            waiting_on[i] += 1;
            dependents[rule].push(i);
        }
    }
    let key = |i: usize| (std::cmp::Reverse(rules[i].priority), rules[i].id.clone());
    let mut ready: BTreeSet<(std::cmp::Reverse<i32>, Arc<str>, usize)> =
        (0..n).filter(|&i| waiting_on[i] == 0).map(|i| (key(i).0, key(i).1, i)).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(next) = ready.pop_first() {
        let i = next.2;
        order.push(i);
        for &d in &dependents[i] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.insert((key(d).0, key(d).1, d));
            }
        }
    }
    if order.len() < n {
        for i in (0..n).filter(|i| !order.contains(i)) {
            problems.add(
                &Item::Rule(rules[i].id.to_string()),
                "effect.multiply.rule",
                "multiply references form a cycle",
            );
        }
        return None;
    }
    let mut new_position = vec![0; n];
    for (pos, &old) in order.iter().enumerate() {
        new_position[old] = pos;
    }
    let mut slots: Vec<Option<Rule>> = rules.into_iter().map(Some).collect();
    let mut sorted = Vec::with_capacity(n);
    for &old in &order {
        let mut rule = slots[old].take()?;
        if let Effect::Multiply { rule: target, .. } = &mut rule.effect {
            *target = new_position[*target];
        }
        sorted.push(rule);
    }
    Some(sorted)
}
