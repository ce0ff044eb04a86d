//! Bounds on what steps put in their outputs and error messages.
//!
//! On AWS every step's output and every error cause travels in the Step Functions execution
//! state, which may not exceed 256 KB; exceeding it raises `States.DataLimitExceeded`, which a
//! `States.ALL` catcher does not catch, so the file would be neither quarantined nor reported
//! (https://docs.aws.amazon.com/step-functions/latest/dg/limits-overview.html,
//! https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
//! A 4,000-column file or a 1 MB bad value must not get there: lists and texts are cut, with a
//! count of what was left out.

/// Names listed in an output (columns): the rest are counted.
pub const MAX_LISTED_NAMES: usize = 100;
/// Characters of one listed name.
pub const MAX_NAME_CHARS: usize = 128;
/// Characters of a value quoted in an error message.
pub const MAX_VALUE_CHARS: usize = 200;
/// Characters of a whole error message (a Step Functions `Cause`).
pub const MAX_MESSAGE_CHARS: usize = 8 * 1024;

/// `text` cut to `max_chars` characters, saying how many were left out.
pub fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => {
            let left_out = text[cut..].chars().count();
            format!("{}… ({left_out} more characters)", &text[..cut])
        }
    }
}

/// The first [`MAX_LISTED_NAMES`] names, each shortened.
pub fn listed(names: &[String]) -> Vec<String> {
    names
        .iter()
        .take(MAX_LISTED_NAMES)
        .map(|n| shorten(n, MAX_NAME_CHARS))
        .collect()
}

/// `names` joined with ", ", followed by "and N more" when `total` exceeds what is listed.
pub fn join_listed(names: &[String], total: u64) -> String {
    let left_out = total.saturating_sub(names.len() as u64);
    if left_out == 0 {
        names.join(", ")
    } else {
        format!("{}, and {left_out} more", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_lists_are_cut_with_a_count_of_what_was_left_out() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcdé", 3), "abc… (2 more characters)");
        let names: Vec<String> = (0..250).map(|i| format!("c{i}")).collect();
        let kept = listed(&names);
        assert_eq!(kept.len(), MAX_LISTED_NAMES);
        assert_eq!(join_listed(&kept[..2], 250), "c0, c1, and 248 more");
        assert_eq!(join_listed(&kept[..2], 2), "c0, c1");
    }
}
