//! deltadrop on emulated AWS: the real state machine definition executed by moto, the real
//! handlers behind its Lambda invocations, real S3, SQS, SES and Step Functions SDK calls.

mod cloudwatch;
mod containers;
mod emulator;
mod lane;
mod map_bench;
mod recorder;
mod split;
mod statemachine;

mod catalog;
mod contained;
mod end_to_end;
mod faults;
mod world;
