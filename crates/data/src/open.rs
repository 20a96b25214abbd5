//! Opening data files that may be gzip-compressed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::DataError;

/// Opens `path` for reading, decompressing it on the fly when it starts with gzip's magic bytes
/// (whatever its extension).
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// The whole content of `path`, decompressed when it is gzip.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    open_maybe_gz(path)?
        .read_to_end(&mut out)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}
