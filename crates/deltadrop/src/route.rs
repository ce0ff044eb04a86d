//! Where a file's stage runs on AWS: one Lambda invocation reading it whole, or parallel chunks
//! (the state machine's Distributed Map). The trigger decides from the size the S3 event gives
//! and the feed's `[feeds.route]`, and puts the route in the execution's input, where the
//! console shows it; the state machine's first state follows it.

use serde::{Deserialize, Serialize};

use crate::config::{Compression, Feed, FileFormat};

/// The most chunks a file is cut into: on AWS the chunks' list passes through the execution's
/// state (at most 256 KiB), so a larger file gets larger chunks.
pub const MAX_CHUNKS: u64 = 500;

/// Which stage a file takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRoute {
    /// The Stage state: one invocation reads the whole file.
    Function,
    /// PlanChunks, CountLines, StageChunks, CommitChunks: an invocation per chunk.
    Chunks,
}

impl StageRoute {
    /// The name in the execution's input (`function`, `chunks`).
    pub fn name(self) -> &'static str {
        match self {
            StageRoute::Function => "function",
            StageRoute::Chunks => "chunks",
        }
    }
}

/// A file's route, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Where the file is staged.
    pub stage: StageRoute,
    /// Why, for the operator reading the execution's input.
    pub why: String,
}

/// The route of `key`, a file of `feed` of `size` bytes (as the S3 event gives it; `None`
/// when the event does not say).
pub fn route(feed: &Feed, key: &str, size: Option<u64>) -> Route {
    let whole = |why: String| Route {
        stage: StageRoute::Function,
        why,
    };
    let Some(from) = feed.route.parallel_stage_from_bytes() else {
        return whole("the feed's route.parallel_stage_from_mb is 0".into());
    };
    let splittable = matches!(
        feed.format_for(key),
        Ok(FileFormat::Csv | FileFormat::Jsonl)
    );
    if !splittable || Compression::from_key(key) != Compression::None {
        return whole("only uncompressed CSV and JSON lines files are split".into());
    }
    let Some(size) = size else {
        return whole("the event gives no size".into());
    };
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    if size > feed.limits.max_decompressed_bytes() {
        return whole(format!(
            "{:.1} MiB, over the feed's limits.max_decompressed_mb ({}): the stage refuses it",
            mib(size),
            feed.limits.max_decompressed_mb
        ));
    }
    if size < from {
        return whole(format!(
            "{:.1} MiB, under the feed's route.parallel_stage_from_mb ({})",
            mib(size),
            feed.route.parallel_stage_from_mb
        ));
    }
    let chunk = feed.route.chunk_bytes().max(size.div_ceil(MAX_CHUNKS));
    Route {
        stage: StageRoute::Chunks,
        why: format!(
            "{:.1} MiB, from the feed's route.parallel_stage_from_mb ({}): {} chunks of about {:.1} MiB",
            mib(size),
            feed.route.parallel_stage_from_mb,
            size.div_ceil(chunk),
            mib(chunk)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn feed(route: &str) -> Feed {
        let text = format!(
            "[[feeds]]\nname = \"o\"\nincoming = \"in/\"\ntable = \"t\"\nkeys = [\"id\"]\n{route}"
        );
        Config::from_toml(&text, "test").unwrap().feeds.remove(0)
    }

    #[test]
    fn large_uncompressed_text_files_take_the_chunks_and_the_rest_one_function() {
        for stage in [StageRoute::Function, StageRoute::Chunks] {
            assert_eq!(serde_json::to_value(stage).unwrap(), stage.name());
        }
        let feed = feed("[feeds.route]\nparallel_stage_from_mb = 1\nchunk_mb = 1\n");
        let mib = 1024 * 1024;
        let stage = |key: &str, size: Option<u64>| route(&feed, key, size).stage;
        assert_eq!(stage("in/a.csv", Some(mib)), StageRoute::Chunks);
        assert_eq!(stage("in/a.jsonl", Some(5 * mib)), StageRoute::Chunks);
        assert_eq!(stage("in/a.csv", Some(mib - 1)), StageRoute::Function);
        assert_eq!(stage("in/a.csv.gz", Some(5 * mib)), StageRoute::Function);
        assert_eq!(stage("in/a.parquet", Some(5 * mib)), StageRoute::Function);
        assert_eq!(stage("in/a.json", Some(5 * mib)), StageRoute::Function);
        assert_eq!(stage("in/a.csv", None), StageRoute::Function);
        let why = route(&feed, "in/a.csv", Some(3 * mib)).why;
        assert!(
            why.contains("3.0 MiB") && why.contains("parallel_stage_from_mb (1)"),
            "{why}"
        );
        assert!(why.contains("3 chunks of about 1.0 MiB"), "{why}");
        // Past MAX_CHUNKS chunks, the chunks grow.
        let why = route(&feed, "in/a.csv", Some(1000 * mib)).why;
        assert!(why.contains("500 chunks of about 2.0 MiB"), "{why}");
        // Past the feed's size limit the stage refuses the file, whichever route: one function.
        let huge = 9 * 1024 * mib;
        assert_eq!(stage("in/a.csv", Some(huge)), StageRoute::Function);
        assert!(route(&feed, "in/a.csv", Some(huge))
            .why
            .contains("max_decompressed_mb"));

        let off = crate::config::Config::from_toml(
            "[[feeds]]\nname = \"o\"\nincoming = \"in/\"\ntable = \"t\"\nkeys = [\"id\"]\n[feeds.route]\nparallel_stage_from_mb = 0\n",
            "test",
        )
        .unwrap();
        assert_eq!(
            route(&off.feeds[0], "in/a.csv", Some(u64::MAX)).stage,
            StageRoute::Function
        );
        assert_eq!(
            self::feed("").route.parallel_stage_from_mb,
            2048,
            "the documented default"
        );
    }
}
