//! Partition replica state, pure logic: delayed operations (the purgatory) today; leader /
//! follower state, ISR and high watermark as replication arrives.
//!
//! # Layout
//! - [`purgatory`]: Kafka's `DelayedOperationPurgatory` — requests that must wait (Fetch
//!   `max_wait_ms`/`min_bytes`, Produce `acks=-1`, JoinGroup) park here, keyed by what can
//!   complete them, with a deadline. No handler thread ever sleeps.

pub mod purgatory;
