//! A deterministic generator of files shaped like TPC-H `orders`: unique `o_orderkey`, numbers,
//! dates and ~50-character comments. The same arguments always give the same bytes.

use std::io::{self, Write};

pub const HEADER: &str =
    "o_orderkey,o_custkey,o_orderstatus,o_totalprice,o_orderdate,o_orderpriority,o_clerk,o_shippriority,o_comment\n";

/// splitmix64: small, fast, and good enough to spread values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: [&str; 24] = [
    "furiously",
    "special",
    "deposits",
    "sleep",
    "quickly",
    "final",
    "accounts",
    "haggle",
    "blithely",
    "regular",
    "packages",
    "boost",
    "carefully",
    "ironic",
    "requests",
    "nag",
    "slyly",
    "express",
    "pinto",
    "beans",
    "theodolites",
    "wake",
    "even",
    "foxes",
];
const PRIORITIES: [&str; 5] = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"];
const STATUSES: [&str; 3] = ["F", "O", "P"];

/// Writes one order row for `key`; `variant` changes every value but the key (for updates).
pub fn write_row(out: &mut impl Write, key: u64, variant: u64) -> io::Result<()> {
    write_order(out, key, variant, None)
}

/// [`write_row`] with the order's date `on_day` days after 1992-01-01 instead of a random one.
fn write_order(
    out: &mut impl Write,
    key: u64,
    variant: u64,
    on_day: Option<u64>,
) -> io::Result<()> {
    let mut rng = Rng::new(key.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ variant);
    let custkey = 1 + rng.below(150_000);
    let status = STATUSES[rng.below(3) as usize];
    let cents = 90_000 + rng.below(50_000_000);
    let random_day = rng.below(2405); // 1992-01-01 + up to 2405 days (mid 1998)
    let day = on_day.unwrap_or(random_day);
    let (year, month, mday) = civil_from_days(8035 + day as i64);
    let priority = PRIORITIES[rng.below(5) as usize];
    let clerk = 1 + rng.below(1000);
    let mut comment = String::with_capacity(64);
    while comment.len() < 44 {
        if !comment.is_empty() {
            comment.push(' ');
        }
        comment.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    writeln!(
        out,
        "{key},{custkey},{status},{}.{:02},{year:04}-{month:02}-{mday:02},{priority},Clerk#{clerk:09},0,{comment}",
        cents / 100,
        cents % 100
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// The initial file: keys 1..=rows in order.
pub fn orders(out: &mut impl Write, rows: u64) -> io::Result<()> {
    out.write_all(HEADER.as_bytes())?;
    for key in 1..=rows {
        write_row(out, key, 0)?;
    }
    Ok(())
}

/// An update file: 90% existing keys (spread over the whole table) with changed values, 10% new
/// keys after the base. With `narrow`, every row updates one contiguous range of existing keys
/// from the middle of the table (a late correction of one period), so the file's key range
/// covers a small part of the table.
pub fn updates(out: &mut impl Write, base_rows: u64, rows: u64, narrow: bool) -> io::Result<()> {
    out.write_all(HEADER.as_bytes())?;
    let existing = if narrow { rows } else { rows * 9 / 10 };
    // A stride coprime to base_rows visits distinct keys.
    let mut stride = base_rows / existing.max(1) | 1;
    while gcd(stride, base_rows) != 1 {
        stride += 2;
    }
    for i in 0..existing {
        let key = if narrow {
            base_rows / 2 + i
        } else {
            1 + (i * stride) % base_rows
        };
        write_row(out, key, 1)?;
    }
    for i in 0..rows - existing {
        write_row(out, base_rows + 1 + i, 1)?;
    }
    Ok(())
}

/// A table that grows by days: keys 1..=rows in order, `rows_per_day` orders a day from
/// 1992-01-01 on, so a larger table has more days, not larger ones (a table partitioned by
/// `o_orderdate` gets partitions of the same size whatever its size).
pub fn daily_orders(out: &mut impl Write, rows: u64, rows_per_day: u64) -> io::Result<()> {
    out.write_all(HEADER.as_bytes())?;
    for key in 1..=rows {
        write_order(out, key, 0, Some((key - 1) / rows_per_day))?;
    }
    Ok(())
}

/// The days a [`daily_updates`] file corrects: `days` days spread over the table's history.
pub fn corrected_days(base_rows: u64, rows_per_day: u64, days: u64) -> Vec<u64> {
    let history = base_rows / rows_per_day;
    (1..=days).map(|i| i * history / (days + 1)).collect()
}

/// An update of a [`daily_orders`] table that touches `days` of its days (late corrections):
/// per day, 90% of the rows change orders of that day, 10% are new orders dated that day.
pub fn daily_updates(
    out: &mut impl Write,
    base_rows: u64,
    rows: u64,
    rows_per_day: u64,
    days: u64,
) -> io::Result<()> {
    out.write_all(HEADER.as_bytes())?;
    let per_day = rows / days;
    let existing = (per_day * 9 / 10).min(rows_per_day);
    let mut new_key = base_rows;
    for day in corrected_days(base_rows, rows_per_day, days) {
        let first = 1 + day * rows_per_day;
        for i in 0..existing {
            write_order(out, first + i * rows_per_day / existing, 1, Some(day))?;
        }
        for _ in existing..per_day {
            new_key += 1;
            write_order(out, new_key, 1, Some(day))?;
        }
    }
    Ok(())
}

/// `rows` rows of one key (`o_orderkey` 1) with different values: the last line wins. The
/// largest in-file resolution of repeated keys a file can ask for.
pub fn one_key(out: &mut impl Write, rows: u64) -> io::Result<()> {
    out.write_all(HEADER.as_bytes())?;
    for variant in 0..rows {
        write_row(out, 1, variant)?;
    }
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_and_sized_like_tpch_orders() {
        let mut a = Vec::new();
        orders(&mut a, 1000).unwrap();
        let mut b = Vec::new();
        orders(&mut b, 1000).unwrap();
        assert_eq!(a, b);
        let bytes_per_row = (a.len() - HEADER.len()) / 1000;
        assert!((100..130).contains(&bytes_per_row), "{bytes_per_row}");
        assert_eq!(civil_from_days(8035), (1992, 1, 1));
    }

    fn update_keys(base_rows: u64, rows: u64, narrow: bool) -> Vec<u64> {
        let mut out = Vec::new();
        updates(&mut out, base_rows, rows, narrow).unwrap();
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn updates_hit_distinct_existing_keys_and_add_new_ones() {
        let keys = update_keys(10_000, 1_000, false);
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), 1_000);
        assert_eq!(keys.iter().filter(|&&k| k <= 10_000).count(), 900);
    }

    fn dates_by_key(text: &[u8]) -> Vec<(u64, String)> {
        String::from_utf8(text.to_vec())
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                (fields[0].parse().unwrap(), fields[4].to_string())
            })
            .collect()
    }

    #[test]
    fn daily_updates_change_orders_of_their_days_and_add_orders_dated_then() {
        let mut base = Vec::new();
        daily_orders(&mut base, 10_000, 100).unwrap();
        let base: std::collections::BTreeMap<u64, String> =
            dates_by_key(&base).into_iter().collect();
        assert_eq!(base[&1], "1992-01-01");
        assert_eq!(base[&101], "1992-01-02");
        let mut update = Vec::new();
        daily_updates(&mut update, 10_000, 150, 100, 3).unwrap();
        let rows = dates_by_key(&update);
        assert_eq!(rows.len(), 150);
        let days: std::collections::BTreeSet<&String> = rows.iter().map(|(_, d)| d).collect();
        assert_eq!(days.len(), 3, "{days:?}");
        let keys: std::collections::BTreeSet<u64> = rows.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys.len(), 150, "distinct keys");
        let existing: Vec<&(u64, String)> =
            rows.iter().filter(|(k, _)| base.contains_key(k)).collect();
        assert_eq!(existing.len(), 135);
        assert!(
            existing.iter().all(|(k, day)| &base[k] == day),
            "an order keeps its day"
        );
    }

    #[test]
    fn narrow_updates_are_one_range_of_existing_keys() {
        let keys = update_keys(10_000, 1_000, true);
        let expected: Vec<u64> = (5_000..6_000).collect();
        assert_eq!(keys, expected);
    }
}
