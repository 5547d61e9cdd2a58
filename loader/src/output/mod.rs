//! Where decoded events go.

pub mod json;
pub mod metrics;
pub mod writer;
