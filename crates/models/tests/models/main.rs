//! Integration tests of the models, one binary (one link) for all of them.

mod torchvision;
mod training;
mod transfer;
