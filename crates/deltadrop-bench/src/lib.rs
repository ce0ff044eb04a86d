//! The benchmark data generator (the `deltadrop-bench` binary runs the measurements).

pub mod generate;
