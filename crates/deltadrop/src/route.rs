//! Where a file's stage runs on AWS: one Lambda invocation reading it whole, parallel chunks
//! (the state machine's Distributed Map), or the container tier (an ECS Fargate task running the
//! same code, for what one function cannot read in its time). The trigger decides from the size
//! the S3 event gives and the feed's `[feeds.route]`, and puts the route in the execution's
//! input, where the console shows it; the state machine's first state follows it.

use serde::{Deserialize, Serialize};

use crate::config::{Compression, Feed, FileFormat, RouteBounds};

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
    /// StageInContainer: one ECS Fargate task reads the whole file.
    Container,
}

impl StageRoute {
    /// The name in the execution's input (`function`, `chunks`, `container`).
    pub fn name(self) -> &'static str {
        match self {
            StageRoute::Function => "function",
            StageRoute::Chunks => "chunks",
            StageRoute::Container => "container",
        }
    }
}

/// The container's task size, as ECS's task overrides take it: CPU units (1024 per vCPU) and
/// memory in MiB, both as strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSize {
    /// CPU units (`"4096"` is 4 vCPU).
    pub cpu: String,
    /// Memory in MiB (`"16384"`).
    pub memory: String,
}

impl TaskSize {
    /// The feed's container size (`container_vcpu`, `container_memory_gb`).
    pub fn of(bounds: &RouteBounds) -> TaskSize {
        TaskSize {
            cpu: ((bounds.container_vcpu * 1024.0) as u64).to_string(),
            memory: (u64::from(bounds.container_memory_gb) * 1024).to_string(),
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
    /// On the chunks route: where the file is read whole if it turns out not to split
    /// (`function` or `container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_whole: Option<StageRoute>,
    /// The container's size, when the route may take the container tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSize>,
}

/// Whether the deployment has the container tier (template.yaml's `ContainerImageUri`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerTier {
    /// Deployed: files may be routed to it.
    Deployed,
    /// Not deployed: files it would take go to the Stage function.
    Absent,
}

/// The route of `key`, a file of `feed` of `size` bytes (as the S3 event gives it; `None`
/// when the event does not say).
pub fn route(feed: &Feed, key: &str, size: Option<u64>, tier: ContainerTier) -> Route {
    let whole = |why: String| Route {
        stage: StageRoute::Function,
        why,
        read_whole: None,
        task: None,
    };
    let Some(size) = size else {
        return whole("the event gives no size".into());
    };
    let bounds = &feed.route;
    if size > feed.limits.max_decompressed_bytes() {
        return whole(format!(
            "{}, over the feed's limits.max_decompressed_mb ({}): the stage refuses it",
            mib(size),
            feed.limits.max_decompressed_mb
        ));
    }
    let container = match (tier, bounds.container_from_bytes()) {
        (ContainerTier::Absent, _) => Err("the deployment has no container tier".to_string()),
        (ContainerTier::Deployed, None) => {
            Err("the feed's route.container_from_mb is 0".to_string())
        }
        (ContainerTier::Deployed, Some(from)) if size < from => Err(format!(
            "under the feed's route.container_from_mb ({})",
            bounds.container_from_mb
        )),
        (ContainerTier::Deployed, Some(_)) => Ok(format!(
            "from the feed's route.container_from_mb ({}): the container tier ({} vCPU, {} GB)",
            bounds.container_from_mb, bounds.container_vcpu, bounds.container_memory_gb
        )),
    };
    let splittable = matches!(
        feed.format_for(key),
        Ok(FileFormat::Csv | FileFormat::Jsonl | FileFormat::Parquet)
    ) && Compression::from_key(key) == Compression::None;
    match (splittable, bounds.parallel_stage_from_bytes()) {
        (true, Some(from)) if size >= from => {
            let chunk = bounds.chunk_bytes().max(size.div_ceil(MAX_CHUNKS));
            let (read_whole, task) = match container {
                Ok(_) => (StageRoute::Container, Some(TaskSize::of(bounds))),
                Err(_) => (StageRoute::Function, None),
            };
            Route {
                stage: StageRoute::Chunks,
                why: format!(
                    "{}, from the feed's route.parallel_stage_from_mb ({}): {} chunks of about {}; read whole by the {} if it does not split",
                    mib(size),
                    bounds.parallel_stage_from_mb,
                    size.div_ceil(chunk),
                    mib(chunk),
                    if read_whole == StageRoute::Container { "container tier" } else { "Stage function" },
                ),
                read_whole: Some(read_whole),
                task,
            }
        }
        _ => match container {
            Ok(why) => Route {
                stage: StageRoute::Container,
                why: format!("{}, {why}", mib(size)),
                read_whole: None,
                task: Some(TaskSize::of(bounds)),
            },
            Err(why) if splittable => whole(format!(
                "{}, under the feed's route.parallel_stage_from_mb ({}); {why}",
                mib(size),
                bounds.parallel_stage_from_mb
            )),
            Err(why) => whole(format!(
                "{}, does not split (only uncompressed CSV, JSON lines and Parquet files do); {why}",
                mib(size)
            )),
        },
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
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
        for stage in [
            StageRoute::Function,
            StageRoute::Chunks,
            StageRoute::Container,
        ] {
            assert_eq!(serde_json::to_value(stage).unwrap(), stage.name());
        }
        let feed = feed("[feeds.route]\nparallel_stage_from_mb = 1\nchunk_mb = 1\n");
        let mib = 1024 * 1024;
        let stage =
            |key: &str, size: Option<u64>| route(&feed, key, size, ContainerTier::Absent).stage;
        assert_eq!(stage("in/a.csv", Some(mib)), StageRoute::Chunks);
        assert_eq!(stage("in/a.jsonl", Some(5 * mib)), StageRoute::Chunks);
        assert_eq!(stage("in/a.csv", Some(mib - 1)), StageRoute::Function);
        assert_eq!(stage("in/a.csv.gz", Some(5 * mib)), StageRoute::Function);
        assert_eq!(stage("in/a.parquet", Some(5 * mib)), StageRoute::Chunks);
        assert_eq!(
            stage("in/a.parquet.gz", Some(5 * mib)),
            StageRoute::Function
        );
        assert_eq!(stage("in/a.json", Some(5 * mib)), StageRoute::Function);
        assert_eq!(stage("in/a.csv", None), StageRoute::Function);
        let why = route(&feed, "in/a.csv", Some(3 * mib), ContainerTier::Absent).why;
        assert!(
            why.contains("3.0 MiB") && why.contains("parallel_stage_from_mb (1)"),
            "{why}"
        );
        assert!(why.contains("3 chunks of about 1.0 MiB"), "{why}");
        // Past MAX_CHUNKS chunks, the chunks grow.
        let why = route(&feed, "in/a.csv", Some(1000 * mib), ContainerTier::Absent).why;
        assert!(why.contains("500 chunks of about 2.0 MiB"), "{why}");
        // Past the feed's size limit the stage refuses the file, whichever route: one function.
        let huge = 9 * 1024 * mib;
        assert_eq!(stage("in/a.csv", Some(huge)), StageRoute::Function);
        assert!(route(&feed, "in/a.csv", Some(huge), ContainerTier::Absent)
            .why
            .contains("max_decompressed_mb"));

        let off = crate::config::Config::from_toml(
            "[[feeds]]\nname = \"o\"\nincoming = \"in/\"\ntable = \"t\"\nkeys = [\"id\"]\n[feeds.route]\nparallel_stage_from_mb = 0\n",
            "test",
        )
        .unwrap();
        assert_eq!(
            route(
                &off.feeds[0],
                "in/a.csv",
                Some(u64::MAX),
                ContainerTier::Deployed
            )
            .stage,
            StageRoute::Function
        );
        assert_eq!(
            self::feed("").route.parallel_stage_from_mb,
            2048,
            "the documented default"
        );
    }

    #[test]
    fn large_files_that_do_not_split_take_the_container_tier_where_it_is_deployed() {
        let feed = feed(
            "[feeds.route]\nparallel_stage_from_mb = 1\nchunk_mb = 1\ncontainer_from_mb = 2\ncontainer_vcpu = 2\ncontainer_memory_gb = 8\n",
        );
        let mib = 1024 * 1024;
        let deployed =
            |key: &str, size: u64| route(&feed, key, Some(size), ContainerTier::Deployed);
        let gz = deployed("in/a.csv.gz", 3 * mib);
        assert_eq!(gz.stage, StageRoute::Container);
        let size = TaskSize {
            cpu: "2048".into(),
            memory: "8192".into(),
        };
        assert_eq!(gz.task.as_ref(), Some(&size));
        assert!(
            gz.why
                .contains("3.0 MiB, from the feed's route.container_from_mb (2)"),
            "{}",
            gz.why
        );
        assert!(gz.why.contains("2 vCPU, 8 GB"), "{}", gz.why);
        assert_eq!(deployed("in/a.json", 2 * mib).stage, StageRoute::Container);
        let parquet = deployed("in/a.parquet", 2 * mib);
        assert_eq!(
            (parquet.stage, parquet.read_whole),
            (StageRoute::Chunks, Some(StageRoute::Container))
        );
        // Under the threshold, or with no tier deployed: the Stage function, and the why says so.
        let small = deployed("in/a.csv.gz", 2 * mib - 1);
        assert_eq!((small.stage, small.task), (StageRoute::Function, None));
        assert!(
            small
                .why
                .contains("under the feed's route.container_from_mb (2)"),
            "{}",
            small.why
        );
        let absent = route(&feed, "in/a.csv.gz", Some(3 * mib), ContainerTier::Absent);
        assert_eq!(absent.stage, StageRoute::Function);
        assert!(absent.why.contains("no container tier"), "{}", absent.why);
        // A large splittable file takes the chunks; the container reads it whole if it must.
        let csv = deployed("in/a.csv", 3 * mib);
        assert_eq!(csv.stage, StageRoute::Chunks);
        assert_eq!(csv.read_whole, Some(StageRoute::Container));
        assert_eq!(csv.task, Some(size));
        let csv = deployed("in/a.csv", mib);
        assert_eq!(
            (csv.stage, csv.read_whole),
            (StageRoute::Chunks, Some(StageRoute::Function))
        );
        assert!(
            csv.why.contains("read whole by the Stage function"),
            "{}",
            csv.why
        );
        // The execution's input: the route without the parts it does not use.
        let input = serde_json::to_value(deployed("in/a.csv.gz", 3 * mib)).unwrap();
        assert_eq!(input["stage"], "container");
        assert_eq!(
            input["task"],
            serde_json::json!({"cpu": "2048", "memory": "8192"})
        );
        assert!(input.get("read_whole").is_none(), "{input}");
    }
}
