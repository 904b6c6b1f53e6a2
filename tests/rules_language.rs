//! The rules language, feature by feature, on small programs with
//! hand-computed results; and the load-time errors a data engineer sees.

mod common;

use accrual::accrue::{NoEffect, Outcome};
use accrual::rules::{self, Item};
use common::*;

/// The test programs and a grocery category.
fn head() -> String {
    format!("{TEST_PROGRAMS}\n{CATEGORIES}")
}

const CATEGORIES: &str = r#"
[categories.groceries]
mcc = ["5411"]
"#;

fn program(rules: &str) -> Harness {
    Harness::new(test_rules(&format!("{CATEGORIES}\n{rules}")))
}

const T: &str = "2026-11-10T12:00:00+03:00";

#[test]
fn rounding_modes_and_steps() {
    let mut h = program(
        r#"
[[rules]]
id = "floor"
program = "cashback"
effect = { percent = "1.5" }

[[rules]]
id = "half-up"
program = "cashback"
effect = { percent = "1.5" }
rounding = { mode = "half-up" }

[[rules]]
id = "ceiling-rouble"
program = "cashback"
effect = { percent = "1.5" }
rounding = { mode = "ceiling", step = "1" }

[[rules]]
id = "per-full-100"
program = "cashback"
effect = { percent = "1.5" }
rounding = { per_full = "100" }
"#,
    );
    // 1.5% of 123.30 = 1.8495
    assert_eq!(
        h.run(&purchase("p", "a", "123.30", "5999", T, "")),
        recs(&[
            ("ceiling-rouble", "earn", "2.00"),
            ("floor", "earn", "1.84"),
            ("half-up", "earn", "1.85"),
            ("per-full-100", "earn", "1.50")
        ])
    );
}

#[test]
fn fixed_and_per_unit_effects() {
    let mut h = program(
        r#"
[[rules]]
id = "welcome-fixed"
program = "points"
when = { mcc = ["5811-5814"], min_amount = "500", max_amount = "10000" }
effect = { fixed = "50" }

[[rules]]
id = "per-100"
program = "points"
effect = { per_unit = { every = "100", award = "3" } }
"#,
    );
    assert_eq!(
        h.run(&purchase("p1", "a", "999.99", "5812", T, "")),
        recs(&[("per-100", "earn", "27"), ("welcome-fixed", "earn", "50")])
    );
    // Outside the amount window and the MCC range.
    assert_eq!(h.run(&purchase("p2", "a", "10000.01", "5812", T, "")), recs(&[("per-100", "earn", "300")]));
    assert_eq!(h.run(&purchase("p3", "a", "999.99", "5815", T, "")), recs(&[("per-100", "earn", "27")]));
    assert_eq!(
        h.apply(&purchase("p4", "a", "99.99", "5815", T, "")).0,
        Outcome::NoEffect(NoEffect::NoRuleMatched)
    );
}

#[test]
fn quarterly_spend_cap_pays_the_bonus_on_the_first_1500_only() {
    // "5% on the first 1,500 of combined purchases per quarter, 1% after":
    // a 1% base plus a 4% bonus whose spend is capped.
    let mut h = program(
        r#"
[caps.rotating-q]
limit = "1500"
period = "quarter"
measure = "spend"

[[rules]]
id = "base"
program = "cashback"
effect = { percent = "1" }

[[rules]]
id = "rotating-bonus"
program = "cashback"
when = { categories = ["groceries"] }
effect = { percent = "4" }
caps = ["rotating-q"]
"#,
    );
    assert_eq!(
        h.run(&purchase("p1", "a", "1000.00", "5411", "2026-10-02T12:00:00+03:00", "")),
        recs(&[("base", "earn", "10.00"), ("rotating-bonus", "earn", "40.00")])
    );
    let (_, records) = h.apply(&purchase("p2", "a", "1000.00", "5411", "2026-11-02T12:00:00+03:00", ""));
    assert_eq!(records[1].amount.to_string(), "20.00", "4% of the 500 left");
    assert!(
        records[1].explanation().contains("4% of 500.00 (the part of 1000.00 within the spend cap)"),
        "{}",
        records[1].explanation()
    );
    assert_eq!(
        h.run(&purchase("p3", "a", "1000.00", "5411", "2026-12-31T20:59:59Z", "")),
        recs(&[("base", "earn", "10.00")])
    );
    // Q1 (Moscow time) starts over.
    assert_eq!(
        h.run(&purchase("p4", "a", "1000.00", "5411", "2026-12-31T21:00:00Z", "")),
        recs(&[("base", "earn", "10.00"), ("rotating-bonus", "earn", "40.00")])
    );
    // Refunding half of p2 gives back half its Q4 spend (250), in Q4.
    assert_eq!(
        h.run(&refund("r2", "a", "p2", "500.00", "2027-01-05T12:00:00+03:00")),
        recs(&[("base", "clawback", "5.00"), ("rotating-bonus", "clawback", "10.00")])
    );
    let q4 = 2026 * 4 + 3;
    assert_eq!(h.accounts["a"].cap_used("rotating-q", q4), d("1250.000000"));
}

#[test]
fn exclusive_group_priority_then_value_then_id() {
    let mut h = program(
        r#"
[[rules]]
id = "zeta"
program = "cashback"
group = "rate"
priority = 5
effect = { percent = "2" }

[[rules]]
id = "alpha"
program = "cashback"
group = "rate"
priority = 5
effect = { percent = "2" }

[[rules]]
id = "higher-value"
program = "cashback"
group = "rate"
priority = 5
when = { channels = ["online"] }
effect = { percent = "3" }

[[rules]]
id = "top-priority-small"
program = "cashback"
group = "rate"
priority = 9
when = { merchants = ["M-9"] }
effect = { fixed = "1" }
"#,
    );
    // Same priority, same value: the smaller id wins.
    assert_eq!(h.run(&purchase("p1", "a", "100.00", "5999", T, "")), recs(&[("alpha", "earn", "2.00")]));
    // Same priority: the higher value wins.
    assert_eq!(
        h.run(&purchase("p2", "a", "100.00", "5999", T, r#","channel":"online""#)),
        recs(&[("higher-value", "earn", "3.00")])
    );
    // Priority beats value.
    let at_m9 = purchase("p3", "a", "100.00", "5999", T, r#","channel":"online""#).replace("M-1", "M-9");
    assert_eq!(h.run(&at_m9), recs(&[("top-priority-small", "earn", "1.00")]));
}

#[test]
fn weekday_and_time_window_conditions() {
    let mut h = program(
        r#"
[[rules]]
id = "weekend-evenings"
program = "points"
when = { weekdays = ["sat", "sun"], from = "2026-11-01T18:00:00", to = 2026-12-01 }
effect = { fixed = "10" }
"#,
    );
    assert_eq!(h.run(&purchase("sat", "a", "1.00", "5999", "2026-11-07T12:00:00+03:00", "")).len(), 1);
    assert_eq!(h.run(&purchase("fri", "a", "1.00", "5999", "2026-11-06T12:00:00+03:00", "")).len(), 0);
    // The window opens at 18:00 Moscow on 1 November (a Sunday).
    assert_eq!(h.run(&purchase("early", "a", "1.00", "5999", "2026-11-01T14:59:59Z", "")).len(), 0);
    assert_eq!(h.run(&purchase("open", "a", "1.00", "5999", "2026-11-01T15:00:00Z", "")).len(), 1);
    assert_eq!(h.run(&purchase("closed", "a", "1.00", "5999", "2026-12-05T12:00:00+03:00", "")).len(), 0);
}

#[test]
fn tier_conditions_need_the_account_tier() {
    let mut h = program(
        r#"
[tiers.gold]
rank = 1
threshold = "1000000"

[tier_qualification]
measure = "spend"
period = "quarter"

[[rules]]
id = "gold-only"
program = "points"
when = { tiers = ["gold"] }
effect = { fixed = "100" }
"#,
    );
    assert_eq!(h.run(&purchase("p1", "a", "10.00", "5999", T, "")).len(), 0);
    h.accounts.entry("a".into()).or_default().tier = Some("gold".into());
    assert_eq!(h.run(&purchase("p2", "a", "10.00", "5999", T, "")), recs(&[("gold-only", "earn", "100")]));
}

fn problems(text: &str) -> Vec<(Item, String, String)> {
    match rules::parse(&format!("{}\n{text}", head()), "bank.toml") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("bank.toml: "), "errors name the file: {shown}");
            e.problems().iter().map(|p| (p.item.clone(), p.field.clone(), p.message.clone())).collect()
        }
    }
}

#[test]
fn a_typo_names_the_file_rule_and_field() {
    let text = r#"
[[rules]]
id = "groceries-5"
program = "cashback"
effect = { percnt = "5" }
"#;
    let p = problems(text);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, Item::Rule("groceries-5".into()));
    assert_eq!(p[0].1, "effect.percnt");
    assert!(
        p[0].2.contains("unknown variant `percnt`") || p[0].2.contains("unknown field `percnt`"),
        "{}",
        p[0].2
    );

    let p = problems(
        "[[rules]]\nid = \"r1\"\nprogram = \"cashback\"\nprogrm = \"x\"\neffect = { percent = \"5\" }\n",
    );
    assert_eq!((p[0].0.clone(), p[0].1.as_str()), (Item::Rule("r1".into()), "progrm"));
    let err = rules::parse(&format!("{}\n[[rules]]\nid = \"r1\"\nprogram = \"cashback\"\nprogrm = \"x\"\neffect = {{ percent = \"5\" }}\n", head()), "bank.toml").unwrap_err();
    assert!(
        err.to_string().starts_with("bank.toml: rule \"r1\": field `progrm`: unknown field `progrm`"),
        "{err}"
    );
}

#[test]
fn unknown_references_are_named() {
    let p = problems(
        r#"
[[rules]]
id = "fuel-3"
program = "cashback"
when = { categories = ["fuel"], partners = ["nobody"], tiers = ["platinum"], weekdays = ["fry"] }
effect = { percent = "3" }
caps = ["missing-cap"]

[[rules]]
id = "x"
program = "miles"
effect = { percent = "1" }
"#,
    );
    let fields: Vec<(String, &str)> = p.iter().map(|(i, f, _)| (i.to_string(), f.as_str())).collect();
    for expected in [
        ("rule \"fuel-3\"", "when.categories"),
        ("rule \"fuel-3\"", "when.partners"),
        ("rule \"fuel-3\"", "when.tiers"),
        ("rule \"fuel-3\"", "when.weekdays"),
        ("rule \"fuel-3\"", "caps"),
        ("rule \"x\"", "program"),
    ] {
        assert!(fields.contains(&(expected.0.to_string(), expected.1)), "{expected:?} not in {fields:?}");
    }
    assert!(p.iter().any(|(_, _, m)| m == "unknown category \"fuel\""));
}

#[test]
fn values_are_checked() {
    let p = problems(
        r#"
[caps.c]
limit = "0.001"
period = "month"

[[rules]]
id = "float"
program = "cashback"
effect = { percent = 5.5 }

[[rules]]
id = "too-much"
program = "cashback"
effect = { percent = "150" }
caps = ["c"]

[[rules]]
id = "fine-step"
program = "points"
effect = { fixed = "1" }
rounding = { step = "0.5" }

[[rules]]
id = "window"
program = "points"
when = { from = 2026-12-01, to = 2026-11-01, min_amount = "10", max_amount = "5" }
effect = { fixed = "1" }

[[rules]]
id = "window"
program = "points"
when = { mcc = ["54111", "5999-5990"] }
effect = { fixed = "1" }
"#,
    );
    let has = |item: &str, field: &str, needle: &str| {
        p.iter().any(|(i, f, m)| i.to_string() == item && f == field && m.contains(needle))
    };
    assert!(has("rule \"float\"", "effect.percent", "write decimals as strings"), "{p:?}");
    assert!(has("rule \"too-much\"", "effect.percent", "at most 100"));
    assert!(has("rule \"fine-step\"", "rounding.step", "finer than program"));
    assert!(has("rule \"window\"", "when.to", "after `from`"));
    assert!(has("rule \"window\"", "when.max_amount", "below min_amount"));
    assert!(has("rule \"window\"", "id", "same id"));
    assert!(has("rule \"window\"", "when.mcc", "not a 4-digit MCC"));
}

#[test]
fn structural_mistakes() {
    let p = problems(
        r#"
[[rules]]
id = "a"
program = "points"
effect = { multiply = { rule = "b", factor = "2" } }

[[rules]]
id = "b"
program = "points"
effect = { multiply = { rule = "a", factor = "2" } }
"#,
    );
    assert!(p.iter().any(|(_, f, m)| f == "effect.multiply.rule" && m.contains("cycle")), "{p:?}");

    let p = problems(
        r#"
[[rules]]
id = "cash"
program = "cashback"
group = "g"
effect = { percent = "1" }

[[rules]]
id = "pts"
program = "points"
group = "g"
effect = { fixed = "1" }
"#,
    );
    assert!(p.iter().any(|(_, f, m)| f == "group" && m.contains("mixes programs")), "{p:?}");

    let bad_section = rules::parse(&format!("{}\n[rulez]\n", head()), "bank.toml").unwrap_err();
    assert_eq!(bad_section.problems()[0].field, "rulez");
    let no_settings =
        rules::parse("[programs.cashback]\nkind = \"cashback\"\nunit = \"RUB\"\n", "bank.toml").unwrap_err();
    assert_eq!(no_settings.problems()[0].item, Item::Settings);
    let syntax = rules::parse("[settings\nname = 1", "bank.toml").unwrap_err();
    assert!(syntax.to_string().starts_with("bank.toml: TOML syntax error"), "{syntax}");
    assert!(syntax.to_string().contains("line 1"), "{syntax}");
}

#[test]
fn the_version_follows_the_rules_not_the_formatting() {
    let head = head();
    let a = rules_from(&format!(
        "{head}\n[[rules]]\nid = \"r\"\nprogram = \"cashback\"\neffect = {{ percent = \"1\" }}\n"
    ));
    let b = rules_from(&format!(
        "# a comment\n{head}\n\n[[rules]]\nid = \"r\"   # same rule\nprogram = \"cashback\"\neffect = {{ percent = \"1\" }}\n"
    ));
    let c = rules_from(&format!(
        "{head}\n[[rules]]\nid = \"r\"\nprogram = \"cashback\"\neffect = {{ percent = \"2\" }}\n"
    ));
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, c.version);
}

#[test]
fn rules_past_the_sixty_fourth_are_evaluated_like_the_first() {
    // Purchases evaluate only the rules their MCC allows, from a bit per
    // rule built at load: a program with more rules than bits must still
    // pay every rule whose conditions hold, and no other.
    let rules: String = (0..70)
        .map(|i| {
            let when = if i % 2 == 0 {
                r#"when = { categories = ["groceries"] }"#
            } else {
                r#"when = { mcc = ["5812"] }"#
            };
            format!(
                "[[rules]]\nid = \"r{i:02}\"\nprogram = \"points\"\n{when}\neffect = {{ fixed = \"1\" }}\n\n"
            )
        })
        .collect();
    let mut h = program(&rules);
    let ids =
        |records: Vec<(String, &'static str, String)>| records.into_iter().map(|r| r.0).collect::<Vec<_>>();
    let even: Vec<String> = (0..70).step_by(2).map(|i| format!("r{i:02}")).collect();
    let odd: Vec<String> = (1..70).step_by(2).map(|i| format!("r{i:02}")).collect();
    assert_eq!(ids(h.run(&purchase("p1", "a", "100", "5411", T, ""))), even);
    assert_eq!(ids(h.run(&purchase("p2", "a", "100", "5812", T, ""))), odd);
    assert!(h.run(&purchase("p3", "a", "100", "5999", T, "")).is_empty());
}

#[test]
fn event_time_bounds_are_checked_at_load_and_leave_the_version_alone() {
    let with = |settings: &str| {
        TEST_PROGRAMS.replace("timezone = \"+03:00\"", &format!("timezone = \"+03:00\"\n{settings}"))
    };
    let bad = with("dedupe_window_days = 7\nmax_event_delay_days = 30\nmax_event_ahead_minutes = 0");
    let err = rules::parse(&format!("{bad}\n{CATEGORIES}"), "bank.toml").unwrap_err();
    let fields: Vec<(&Item, &str)> = err.problems().iter().map(|p| (&p.item, p.field.as_str())).collect();
    assert_eq!(
        fields,
        [(&Item::Settings, "max_event_ahead_minutes"), (&Item::Settings, "max_event_delay_days")]
    );
    assert!(err.to_string().contains("between 1 day and dedupe_window_days (7)"), "{err}");

    let defaults = rules::parse(&with("dedupe_window_days = 7"), "bank.toml").unwrap();
    assert_eq!((defaults.max_event_ahead_ms, defaults.max_event_delay_ms), (3_600_000, 7 * 86_400_000));
    let set = rules::parse(
        &with("dedupe_window_days = 7\nmax_event_ahead_minutes = 5\nmax_event_delay_days = 2"),
        "bank.toml",
    )
    .unwrap();
    assert_eq!((set.max_event_ahead_ms, set.max_event_delay_ms), (300_000, 2 * 86_400_000));
    assert_ne!(set.version, defaults.version, "set, they are part of the version");
    // Left out, the version is what it was before the settings existed
    // (the shipped program's, as in docs/operations.md).
    let example = rules::load(&common::repo_path("config/rules.example.toml")).unwrap();
    assert_eq!(&*example.version, "50a0dd53eb01cf7d");
}

/// The weekend rule under `zone`, from a local time that Berlin's clocks
/// skip (02:30 on 28 March 2027, when 02:00 CET becomes 03:00 CEST).
fn weekend_in(zone: &str) -> Harness {
    let programs = TEST_PROGRAMS.replace("timezone = \"+03:00\"", &format!("timezone = \"{zone}\""));
    Harness::new(rules_from(&format!(
        r#"{programs}
[[rules]]
id = "weekend"
program = "points"
when = {{ weekdays = ["sat", "sun"], from = "2027-03-28T02:30:00" }}
effect = {{ fixed = "10" }}
"#
    )))
}

#[test]
fn an_iana_time_zone_puts_weekdays_and_windows_where_its_clocks_are() {
    let mut berlin = weekend_in("Europe/Berlin");
    let mut fixed = weekend_in("+01:00");
    assert_eq!(berlin.core.rules().timezone.to_string(), "Europe/Berlin");
    assert_ne!(berlin.core.rules().version, fixed.core.rules().version);
    let described = berlin.core.rules().describe();
    assert!(described.contains("time zone Europe/Berlin (IANA time zone database 20"), "{described}");
    // The skipped 02:30 is taken as 03:30 summer time, 01:30 UTC.
    assert!(berlin.run(&purchase("b1", "a", "1", "5999", "2027-03-28T01:29:59Z", "")).is_empty());
    assert_eq!(berlin.run(&purchase("b2", "a", "1", "5999", "2027-03-28T01:30:00Z", "")).len(), 1);
    // A fixed +01:00 opens the window at 01:30 UTC as well, but in summer
    // Friday 22:30 UTC is Saturday 00:30 in Berlin and still Friday at +01:00.
    let friday_night = "2027-07-02T22:30:00Z";
    assert_eq!(berlin.run(&purchase("b3", "a", "1", "5999", friday_night, "")).len(), 1);
    assert!(fixed.run(&purchase("f3", "a", "1", "5999", friday_night, "")).is_empty());
    // In winter the two agree again: Friday 23:30 UTC is Saturday in both.
    let winter = "2027-11-05T23:30:00Z";
    assert_eq!(berlin.run(&purchase("b4", "a", "1", "5999", winter, "")).len(), 1);
    assert_eq!(fixed.run(&purchase("f4", "a", "1", "5999", winter, "")).len(), 1);
}

#[test]
fn an_unknown_time_zone_is_refused_naming_the_field_and_the_database() {
    let text = TEST_PROGRAMS.replace("timezone = \"+03:00\"", "timezone = \"Europe/Atlantis\"");
    let err = rules::parse(&text, "bank.toml").unwrap_err();
    let fields: Vec<(&Item, &str)> = err.problems().iter().map(|p| (&p.item, p.field.as_str())).collect();
    assert_eq!(fields, [(&Item::Settings, "timezone")]);
    let message = err.to_string();
    assert!(
        message.contains("Europe/Atlantis") && message.contains("IANA database (version 20"),
        "{message}"
    );
}

#[test]
fn negated_conditions_pay_the_base_rate_everywhere_but_where_they_say() {
    let mut h = program(
        r#"
[partners.megamart]
merchant_ids = ["M-MEGA"]

[[rules]]
id = "groceries-5"
program = "cashback"
when = { categories = ["groceries"] }
effect = { percent = "5" }

# The base rate everywhere else: no hand-made complement of MCC lists.
[[rules]]
id = "base-1"
program = "cashback"
when = { not = { categories = ["groceries"], mcc = ["4829"], partners = ["megamart"], channels = ["atm"] } }
effect = { percent = "1" }
"#,
    );
    assert_eq!(h.run(&purchase("g", "a", "100.00", "5411", T, "")), recs(&[("groceries-5", "earn", "5.00")]));
    assert_eq!(h.run(&purchase("f", "a", "100.00", "5541", T, "")), recs(&[("base-1", "earn", "1.00")]));
    assert!(h.run(&purchase("t", "a", "100.00", "4829", T, "")).is_empty(), "a negated MCC");
    let online = r#","channel":"online""#;
    assert_eq!(h.run(&purchase("o", "a", "100.00", "5999", T, online)), recs(&[("base-1", "earn", "1.00")]));
    assert!(
        h.run(&purchase("c", "a", "100.00", "5999", T, r#","channel":"atm""#)).is_empty(),
        "a negated channel"
    );
    let at_partner = purchase("m", "a", "100.00", "5999", T, "").replace("M-1", "M-MEGA");
    assert!(h.run(&at_partner).is_empty(), "a negated partner");
}

#[test]
fn negated_conditions_name_what_they_cannot_find() {
    let text = format!(
        r#"{}
[[rules]]
id = "base"
program = "cashback"
when = {{ not = {{ categories = ["grocery"], partners = ["nobody"], mcc = ["54x1"], merchants = ["M-1"] }} }}
effect = {{ percent = "1" }}
"#,
        head()
    );
    let err = rules::parse(&text, "bank.toml").unwrap_err().to_string();
    assert!(err.contains("when.not") && err.contains("merchants"), "{err}");
    let text = text.replace(", merchants = [\"M-1\"]", "");
    let err = rules::parse(&text, "bank.toml").unwrap_err();
    let fields: Vec<&str> = err.problems().iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["when.not.categories", "when.not.mcc", "when.not.partners"], "{err}");
}

#[test]
fn a_float_percent_is_refused_saying_what_the_string_would_mean() {
    let text = format!(
        "{}\n[[rules]]\nid = \"base\"\nprogram = \"cashback\"\neffect = {{ percent = 0.05 }}\n",
        head()
    );
    let err = rules::parse(&text, "bank.toml").unwrap_err().to_string();
    assert!(err.contains("effect.percent"), "{err}");
    assert!(err.contains("\"0.05\" means 0.05 percent"), "{err}");
    assert!(err.contains("if you meant 0.05 as a fraction, that is \"5\""), "{err}");
}

#[test]
fn every_mistake_of_a_rule_is_reported_in_one_run() {
    let text = format!(
        r#"{}
[[rules]]
id = "a"
program = 5
colour = "red"
when = {{ categorys = ["groceries"], weekdays = "mon" }}
effect = {{ percent = 0.05 }}
priorty = 3

[[rules]]
id = "b"
program = "cashback"
when = {{ tiers = ["gold"] }}
"#,
        head()
    );
    let err = rules::parse(&text, "bank.toml").unwrap_err();
    let mut found: Vec<(String, &str)> =
        err.problems().iter().map(|p| (p.item.to_string(), p.field.as_str())).collect();
    found.sort();
    let want = [
        ("rule \"a\"", "colour"),
        ("rule \"a\"", "effect.percent"),
        ("rule \"a\"", "priorty"),
        ("rule \"a\"", "program"),
        ("rule \"a\"", "when.categorys"),
        ("rule \"a\"", "when.weekdays"),
        ("rule \"b\"", "effect"),
    ];
    let want: Vec<(String, &str)> = want.iter().map(|(i, f)| (i.to_string(), *f)).collect();
    // `program` once (its wrong type, not also "missing" after it was set
    // aside), and no complaint about the `effect` left empty.
    assert_eq!(found, want, "{err}");
}

#[test]
fn a_broken_category_is_reported_once_not_again_by_every_rule_that_uses_it() {
    let text = format!(
        r#"{TEST_PROGRAMS}
[categories.groceries]
mcc = ["5411"]
colour = "green"

[[rules]]
id = "groceries-5"
program = "cashback"
when = {{ categories = ["groceries"] }}
effect = {{ percent = "5" }}

[[rules]]
id = "fuel-3"
program = "cashback"
when = {{ categories = ["fuels"] }}
effect = {{ percent = "3" }}
"#
    );
    let err = rules::parse(&text, "bank.toml").unwrap_err();
    let found: Vec<String> = err.problems().iter().map(|p| format!("{}: {}", p.item, p.field)).collect();
    // The category's own mistake, and the rule that names a category that
    // does not exist at all; the rule naming the broken one is not wrong.
    assert_eq!(found, ["category \"groceries\": colour", "rule \"fuel-3\": when.categories"], "{err}");
}
