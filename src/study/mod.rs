//! The reproduction pipeline behind the example binaries (cargo feature `study`, on by
//! default): data sets and devices by name, backbones by name with optional torchvision weights,
//! the main job ([`robust_finetune`]), the paper's tables and figures ([`paper`]), and their
//! output as CSV, JSON and SVG/PNG plots written atomically under one directory.

mod datasets;
mod device;
mod error;
pub mod evaluation;
pub mod experiments;
pub mod fair_adversarial;
mod keys;
pub mod local_learning;
mod output;
pub mod paper;
pub mod pipeline;
mod plot;
pub mod regularizer_comparison;
pub mod robust_finetune;
mod shard;
pub mod spectral_transfer;
mod summary;

pub use datasets::{
    ClassBatches, ClassificationData, DECODE_BUDGET, DatasetName, HashBatches, IMAGENET_STATS,
    Images, InputView, Labels, RetrievalData, ViewedModel, accuracy, encode, load_classification,
    load_retrieval, subset_seed,
};
pub use device::DeviceChoice;
pub use error::StudyError;
use error::invalid;
pub use keys::{Metric, source_key};
pub use output::{
    Machine, ResultRow, RowKey, read_csv, read_json, text_table, write_atomic, write_csv,
    write_json,
};
pub use plot::{HeatMap, Panel, Series, plot_heatmaps, plot_panels};
pub use shard::Shard;
pub use summary::{robustness_panels, robustness_tables};

/// A stop flag raised by Ctrl-C (the studies poll it after each training step and between
/// attack runs, save what is finished, and return [`StudyError::Interrupted`]).
pub fn stop_on_ctrl_c() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, StudyError> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        eprintln!("\nstopping after the current step; rerun the same command to resume");
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .map_err(|e| invalid("ctrl-c handler", e, "could not be installed"))?;
    Ok(stop)
}
