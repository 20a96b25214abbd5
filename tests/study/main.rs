//! Integration tests of the study pipeline (the main job and the paper examples), one binary.

mod paper_examples;
mod robust_finetune;
