//! End-to-end tests of the pipeline on real files and real Delta tables in a temporary folder.

mod support;

mod batch;
mod cli;
mod concurrency;
mod cost;
mod crosscheck;
mod formats;
mod malformed;
mod partitions;
mod rejects;
mod split;
mod upsert;
