//! Integration tests of the feedback rules, one binary (one link) for all of them.

mod batch_norm;
mod common;
mod errors;
mod feedback_matrix;
mod frozen;
mod gradients;
mod pooling;
mod scale;
mod state;
