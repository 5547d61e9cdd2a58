//! Where decoded events go: the sinks behind one fan-out ([`sink`]), JSON lines ([`json`]) to
//! stdout or a rotated file ([`file`]), OTLP logs over gRPC ([`otlp`]), and the metrics endpoint.

pub mod file;
pub mod json;
pub mod metrics;
pub mod otlp;
pub mod sink;
