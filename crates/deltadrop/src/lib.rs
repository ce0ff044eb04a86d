//! deltadrop: turn files that land in a bucket into up-to-date Delta Lake tables.
//!
//! The pipeline is four steps ([`steps::stage`], [`steps::archive`] or [`steps::quarantine`],
//! [`steps::upsert`], [`steps::notify`]) over an [`Environment`] that the caller builds: the
//! configuration, the bucket ([`storage::ObjectStorage`]) and the mailer. The Lambda
//! handlers run one step each; [`run::run_file`] runs them all in the state machine's order.
//!
//! Features: `delta` (delta-rs) brings the stage step and the file readers; `merge` (delta +
//! DataFusion) brings the upsert step, [`run`], [`inspect`] and maintenance. Without them the
//! library routes, archives, quarantines and notifies, so that the binaries that only do that
//! link no Delta engine and stay small.

#![warn(missing_docs)]

#[cfg(feature = "delta")]
pub mod athena;
pub mod bounded;
pub mod catalog;
pub mod change_sample;
pub mod config;
#[cfg(feature = "delta")]
pub mod delta;
pub mod environment;
pub mod error;
pub mod expect;
#[cfg(feature = "merge")]
pub mod inspect;
pub mod mail;
#[cfg(feature = "merge")]
pub mod maintain;
pub mod partition;
#[cfg(feature = "delta")]
pub mod partitioned_files;
#[cfg(feature = "delta")]
pub mod read;
pub mod rejects;
pub mod replay;
#[cfg(feature = "merge")]
pub mod replay_rejects;
pub mod route;
#[cfg(feature = "merge")]
pub mod run;
#[cfg(feature = "merge")]
pub mod status;
pub mod steps;
pub mod storage;
pub mod upload;
pub mod watch;

pub use environment::{Environment, MergeMemory, Split};
pub use error::{Error, ErrorKind, Result};
