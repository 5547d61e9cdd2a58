//! Where decoded events go.

pub mod json;
