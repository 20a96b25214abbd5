//! Integration tests of the losses, one binary (one link) for all of them.

mod hyp2;
mod regularizers;
