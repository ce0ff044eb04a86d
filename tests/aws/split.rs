//! The chunked stage on the S3 API (moto): the chunks' ranged reads, their uncommitted files
//! and the one commit through delta-rs's S3 store give the staging table a whole read gives,
//! read back by the Python `deltalake` package.

use deltadrop::steps::stage::stage_in_chunks;
use deltadrop::steps::{stage, RunInput, StageOutput};
use deltadrop::Split;

use crate::emulator::Moto;
use crate::world::read_with_python;

const BUCKET: &str = "deltadrop-split";
const KEY: &str = "incoming/orders/large.csv";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_on_s3_staged_in_chunks_equals_the_file_read_whole() {
    let moto = Moto::from_env();
    let sdk = moto.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let config = "[[feeds]]\nname = \"orders\"\nincoming = \"incoming/orders/\"\n\
                  table = \"tables/orders\"\nkeys = [\"id\"]\n";
    let csv: String = std::iter::once("id,name,amount\n".to_string())
        .chain((0..6000).map(|i| format!("{},\"name, {i}\",{}.25\n", i % 2500, i % 97)))
        .collect();
    for (key, body) in [("deltadrop.toml", config), (KEY, csv.as_str())] {
        s3.put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let settings = deltadrop_aws::context::Settings {
        bucket: BUCKET.into(),
        config_key: "deltadrop.toml".into(),
        config_ttl: deltadrop_aws::context::DEFAULT_CONFIG_TTL,
        state_machine_arn: None,
        s3_endpoint: Some(moto.endpoint.clone()),
        merge_memory: None,
        glue_database: None,
        container_tier: deltadrop::route::ContainerTier::Absent,
        container_run: None,
    };
    let context = deltadrop_aws::context::AwsContext::new(&sdk, &settings)
        .await
        .unwrap();
    let env = context.environment().await.unwrap();
    let upload = env.storage.upload(KEY).await.unwrap().unwrap();
    let run = |id: &str| RunInput {
        run_id: id.into(),
        key: KEY.into(),
        feed: "orders".into(),
        started_at: chrono::Utc::now(),
        upload: upload.clone(),
    };

    let whole = stage(&env, &run("whole")).await.unwrap();
    let split = Split {
        workers: 4,
        chunk_bytes: 16 * 1024,
    };
    let chunked = stage_in_chunks(&env, &run("chunked"), &split)
        .await
        .unwrap()
        .expect("staged in chunks");
    assert!(chunked.chunks.unwrap() >= 5, "{chunked:?}");
    assert_eq!(chunked.rows, 6000);
    let rows = |staged: &StageOutput| {
        let table = staged.staging_table.as_deref().unwrap();
        read_with_python(&moto, table, deltadrop::read::LINE_COLUMN)["rows"].clone()
    };
    assert_eq!(rows(&chunked), rows(&whole));
}
