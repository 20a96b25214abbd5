//! Integration tests of the metrics, one binary (one link) for all of them.

mod accuracy;
mod representation;
mod retrieval;
