//! Hostile input: lines an attacker or a broken upstream system would
//! send, mixed into a valid stream (`accrual gen --hostile N`). The engine
//! must take every one without a panic, account for each (records, no
//! effect, duplicate, or a dead letter with a reason), and never pay the
//! same `accrual_id` twice. Deterministic, as the rest of `gen`.

use super::Rng;

/// Mixes `count` hostile lines into `valid` (lines without their newline,
/// in time order): after each valid line, with the odds that spread them
/// evenly. Returns the whole stream, one line per element.
pub fn mix(valid: &[Vec<u8>], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed ^ 0x0068_6f73_7469_6c65);
    let mut out = Vec::with_capacity(valid.len() + count);
    let mut left = count;
    for (i, line) in valid.iter().enumerate() {
        out.push(line.clone());
        let lines_left = (valid.len() - i) as u64;
        // Spread what is left over the lines left, several at a time.
        let here = (left as u64).div_ceil(lines_left).min(left as u64) as usize;
        for _ in 0..here {
            out.push(hostile(&mut rng, &valid[..=i]));
        }
        left -= here;
    }
    out
}

/// A field of a valid line, if it has it as a string.
fn field<'a>(line: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(line).ok()?;
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

fn purchase(id: &str, account: &str, amount: &str, at: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"purchase","account_id":"{account}","amount":{amount},"currency":"RUB","mcc":"5411","merchant_id":"M-1","occurred_at":"{at}"}}"#
    )
}

fn pick<'a>(rng: &mut Rng, from: &'a [&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

/// What a hostile line is built from: a recent valid line, its account
/// and time, a fresh id, and every valid line so far.
struct Material<'a> {
    seen: &'a [Vec<u8>],
    recent: &'a [u8],
    account: String,
    at: String,
    id: String,
    n: u64,
}

impl Material<'_> {
    fn purchase(&self, amount: &str) -> String {
        purchase(&self.id, &self.account, amount, &self.at)
    }
}

/// The kinds of hostile line, each from a random generator and the valid
/// lines so far.
const KINDS: [fn(&mut Rng, &Material<'_>) -> Vec<u8>; 17] = [
    random_bytes,
    truncated,
    deep_nesting,
    huge_string,
    odd_amount,
    wrong_type,
    bad_text,
    duplicate_key,
    unknown_type,
    unknown_original,
    odd_time,
    control_characters,
    exact_copy,
    late_copy,
    future_dated,
    long_integer,
    not_an_event,
];

/// One hostile line. `seen` are the valid lines so far (never empty).
fn hostile(rng: &mut Rng, seen: &[Vec<u8>]) -> Vec<u8> {
    let n = rng.next_u64();
    let recent = &seen[seen.len() - 1 - rng.below(seen.len().min(50) as u64) as usize];
    let from = Material {
        seen,
        recent,
        account: field(recent, "account_id").unwrap_or("acc-0000001").to_string(),
        at: field(recent, "occurred_at").unwrap_or("2026-11-20T12:00:00Z").to_string(),
        id: format!("h-{n:016x}"),
        n,
    };
    KINDS[rng.below(KINDS.len() as u64) as usize](rng, &from)
}

fn random_bytes(rng: &mut Rng, _: &Material<'_>) -> Vec<u8> {
    (0..1 + rng.below(300)).map(|_| rng.below(256) as u8).filter(|&b| b != b'\n').collect()
}

fn truncated(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    f.recent[..1 + rng.below(f.recent.len() as u64 - 1) as usize].to_vec()
}

fn deep_nesting(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let depth = 10 + rng.below(5_000) as usize;
    let (open, close) = if rng.percent(50.0) { ("[", "]") } else { ("{\"a\":", "}") };
    let id = &f.id;
    format!(r#"{{"event_id":"{id}","type":"purchase","x":{}1{}}}"#, open.repeat(depth), close.repeat(depth))
        .into_bytes()
}

fn huge_string(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let huge = "A".repeat(100 + rng.below(40_000) as usize);
    let which = pick(rng, &["event_id", "account_id", "merchant_id", "currency", "mcc"]);
    let key = format!("\"{which}\":\"");
    f.purchase("\"10.00\"").replacen(&key, &format!("{key}{huge}"), 1).into_bytes()
}

fn odd_amount(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let amount = pick(
        rng,
        &[
            "1234567890123456789012345678901234567890",
            "\"1234567890123456789012345678901234567890\"",
            "\"NaN\"",
            "\"Infinity\"",
            "\"-Infinity\"",
            "1e400",
            "-1e400",
            "\"1e-400\"",
            "1.7976931348623157e309",
            "\"-0\"",
            "0.0000001",
            "79228162514264337593543950336",
            "\"0.1e29\"",
            "-0.0",
        ],
    );
    f.purchase(amount).into_bytes()
}

fn wrong_type(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let bad = pick(rng, &["true", "[]", "{}", "5", "-1", "\"\"", "[\"a\"]", "1.5"]);
    let which = pick(rng, &["event_id", "type", "account_id", "amount", "mcc", "occurred_at", "currency"]);
    let value = match which {
        "amount" => "\"10.00\"".to_string(),
        "event_id" => format!("\"{}\"", f.id),
        "account_id" => format!("\"{}\"", f.account),
        "occurred_at" => format!("\"{}\"", f.at),
        "type" => "\"purchase\"".to_string(),
        "mcc" => "\"5411\"".to_string(),
        _ => "\"RUB\"".to_string(),
    };
    f.purchase("\"10.00\"")
        .replacen(&format!("\"{which}\":{value}"), &format!("\"{which}\":{bad}"), 1)
        .into_bytes()
}

/// Invalid UTF-8, lone surrogates (escaped and raw) in an id.
fn bad_text(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let bad: &[u8] = match rng.below(5) {
        0 => b"\xff\xfe",
        1 => b"\xc3",
        2 => b"\\ud800",
        3 => b"\\udfff\\u0041",
        _ => b"\xed\xa0\x80",
    };
    let line = f.purchase("\"10.00\"").into_bytes();
    let at = line.iter().position(|&b| b == b',').unwrap_or(line.len()) - 1;
    [&line[..at], bad, &line[at..]].concat()
}

fn duplicate_key(_: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    f.purchase("\"10.00\"").replacen("\"amount\":", "\"amount\":\"99999.00\",\"amount\":", 1).into_bytes()
}

fn unknown_type(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let kind = pick(rng, &["gift", "PURCHASE", "", "purchase ", "refund\\u0000", "clock2"]);
    f.purchase("\"10.00\"").replacen("\"purchase\"", &format!("\"{kind}\""), 1).into_bytes()
}

/// A refund or reversal of a purchase never seen.
fn unknown_original(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let kind = pick(rng, &["refund", "reversal"]);
    let (id, account, at, n) = (&f.id, &f.account, &f.at, f.n);
    format!(
        r#"{{"event_id":"{id}","type":"{kind}","account_id":"{account}","original_event_id":"never-{n:x}","amount":"5.00","currency":"RUB","occurred_at":"{at}"}}"#
    )
    .into_bytes()
}

/// Years 0000 to 9999, impossible dates and offsets, overlong fractions.
fn odd_time(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let time = match rng.below(6) {
        0 => format!("{:04}-06-15T12:00:00Z", rng.below(10_000)),
        1 => "2026-02-30T12:00:00Z".to_string(),
        2 => "2026-13-01T00:00:00Z".to_string(),
        3 => "2026-11-20T12:00:00+24:00".to_string(),
        4 => "2026-11-20T12:00:00.123456789012345678901Z".to_string(),
        _ => "2026-11-20T12:00:00".to_string(),
    };
    purchase(&f.id, &f.account, "\"10.00\"", &time).into_bytes()
}

fn control_characters(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let bad = pick(rng, &["\u{1}", "\u{7f}", "\\u0000", "\\t", "\u{1b}[31m", "\\u001f"]);
    let key = format!("\"{}\":\"", pick(rng, &["event_id", "account_id"]));
    f.purchase("\"10.00\"").replacen(&key, &format!("{key}x{bad}"), 1).into_bytes()
}

fn exact_copy(_: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    f.recent.to_vec()
}

/// A copy of one of the first lines: late once the stream has moved on.
fn late_copy(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    f.seen[rng.below(f.seen.len().div_ceil(10) as u64) as usize].clone()
}

/// Purchases, clocks, statement cycles and replays dated far ahead.
fn future_dated(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let year = pick(rng, &["2099-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2100-06-01T00:00:00+03:00"]);
    let (id, account) = (&f.id, &f.account);
    match rng.below(4) {
        0 => purchase(id, account, "\"1000.00\"", year).into_bytes(),
        1 => format!(r#"{{"event_id":"{id}","type":"clock","occurred_at":"{year}"}}"#).into_bytes(),
        2 => format!(
            r#"{{"event_id":"{id}","type":"statement_cycle","account_id":"{account}","statement_day":5,"occurred_at":"{year}"}}"#
        )
        .into_bytes(),
        // The same event again, dated ahead: a replay must not move the
        // clock either.
        _ => String::from_utf8_lossy(f.recent).replace(&f.at, year).into_bytes(),
    }
}

/// A bare integer of 20 to 45 digits in any field.
fn long_integer(rng: &mut Rng, f: &Material<'_>) -> Vec<u8> {
    let digits: String = (0..20 + rng.below(26))
        .map(|i| if i == 0 { '9' } else { char::from(b'0' + rng.below(10) as u8) })
        .collect();
    let which = pick(rng, &["amount", "mcc", "statement_day", "event_id", "occurred_at", "extra"]);
    let (id, account, at) = (&f.id, &f.account, &f.at);
    format!(
        r#"{{"event_id":"{id}","type":"purchase","account_id":"{account}","currency":"RUB","merchant_id":"M-1","occurred_at":"{at}","mcc":"5411","amount":"1.00","{which}":{digits}}}"#
    )
    .into_bytes()
}

fn not_an_event(rng: &mut Rng, _: &Material<'_>) -> Vec<u8> {
    pick(
        rng,
        &["{}", "[]", "null", "\"purchase\"", "0", "true", "{\"a\":1} trailing", "{", "}", "\u{feff}{}"],
    )
    .as_bytes()
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_the_requested_count_deterministically() {
        let valid: Vec<Vec<u8>> = (0..100)
            .map(|i| purchase(&format!("e{i}"), "acc-1", "\"1.00\"", "2026-11-20T12:00:00Z").into_bytes())
            .collect();
        let a = mix(&valid, 250, 7);
        assert_eq!(a.len(), 350);
        assert_eq!(a, mix(&valid, 250, 7));
        assert_ne!(a, mix(&valid, 250, 8));
        assert!(a.iter().all(|l| !l.contains(&b'\n')), "one line each");
        assert!(a.iter().filter(|l| valid.contains(l)).count() >= 100);
    }
}
