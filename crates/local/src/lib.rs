#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
mod hybrid;
mod krotov;

pub use error::LocalError;
pub use hybrid::HiddenLayer;
pub use krotov::{
    KrotovEpoch, KrotovHopfield, KrotovHopfieldConfig, SynapseVariance, Trained, train,
};
