//! Helpers shared by the integration tests.

pub mod alloc;
pub mod process;
pub mod requests;
