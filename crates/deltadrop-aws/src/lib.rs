//! deltadrop on AWS: the S3 bucket, the SES mailer, the trigger that starts Step Functions
//! executions, and the five Lambda functions (each binary in `crates/lambda-*` is one call to
//! [`lambda::serve`] of one [`Handler`]); the container tier's binary (`deltadrop-task`, in
//! `src/bin`) runs one step of one run with the same handlers ([`task`]).

#![warn(missing_docs)]

pub mod callback;
pub mod context;
#[cfg(feature = "merge")]
pub mod glue;
pub mod handlers;
#[cfg(feature = "merge")]
pub mod handoff;
pub mod lambda;
#[cfg(feature = "merge")]
pub mod lane;
pub mod metrics;
pub mod s3;
pub mod ses;
#[cfg(feature = "merge")]
pub mod task;
pub mod trigger;

pub use context::{AwsContext, Settings};
#[cfg(feature = "merge")]
pub use handlers::invoke;
pub use handlers::{handle_json, Function, Handler};
