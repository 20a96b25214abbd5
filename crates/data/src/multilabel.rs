//! Multi-label list files of the deep-hashing literature, and their splits.
//!
//! One line per image: `<relative image path> <l₁> … <l_C>` with `lᵢ ∈ {0, 1}` (NUS-WIDE: 21
//! classes, MS-COCO: 80), whitespace-separated. DeepHash-style directories hold three such files:
//! `train.txt`, `test.txt` (the queries) and `database.txt`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::DataError;
use crate::open::open_maybe_gz;

/// The entries of one list file: image paths (relative to the data root) and their label sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiLabelList {
    /// Image path of each entry, as written in the file.
    pub paths: Vec<PathBuf>,
    /// Classes of each entry, ascending (may be empty: some NUS-WIDE images have no tag).
    pub labels: Vec<Vec<usize>>,
    /// Length of the label vectors.
    pub num_classes: usize,
}

impl MultiLabelList {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The entries at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> MultiLabelList {
        MultiLabelList {
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i].clone()).collect(),
            num_classes: self.num_classes,
        }
    }

    /// The label sets as a multi-hot matrix, row-major `[len, num_classes]`.
    pub fn multi_hot(&self) -> Vec<f32> {
        multi_hot(&self.labels, self.num_classes)
    }
}

/// Row-major `[labels.len(), num_classes]` multi-hot matrix of label sets.
pub fn multi_hot(labels: &[Vec<usize>], num_classes: usize) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * num_classes];
    for (row, set) in labels.iter().enumerate() {
        for &c in set {
            out[row * num_classes + c] = 1.0;
        }
    }
    out
}

/// Reads a list file (optionally gzip-compressed) whose label vectors have `num_classes` entries.
/// Blank lines are skipped; a wrong number of labels or a label other than 0/1 is an error that
/// names the file and the line.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("test.txt");
/// std::fs::write(&path, "img/a.jpg 0 1 1\nimg/b.jpg 1 0 0\n").unwrap();
/// let list = signsym_data::read_multilabel_list(&path, 3).unwrap();
/// assert_eq!(list.labels, vec![vec![1, 2], vec![0]]);
/// ```
pub fn read_multilabel_list(
    path: impl AsRef<Path>,
    num_classes: usize,
) -> Result<MultiLabelList, DataError> {
    let path = path.as_ref();
    let reader = BufReader::new(open_maybe_gz(path)?);
    let malformed = |line: usize, message: String| DataError::Malformed {
        path: path.to_path_buf(),
        position: format!("line {line}"),
        message,
    };
    let mut list = MultiLabelList {
        paths: Vec::new(),
        labels: Vec::new(),
        num_classes,
    };
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut fields = line.split_whitespace();
        let Some(image) = fields.next() else {
            continue;
        };
        let values: Vec<&str> = fields.collect();
        if values.len() != num_classes {
            return Err(malformed(
                n + 1,
                format!(
                    "{} labels after `{image}`, expected {num_classes}",
                    values.len()
                ),
            ));
        }
        let mut set = Vec::new();
        for (c, v) in values.iter().enumerate() {
            match *v {
                "1" => set.push(c),
                "0" => {}
                other => {
                    return Err(malformed(
                        n + 1,
                        format!("label {} is `{other}`, expected 0 or 1", c + 1),
                    ));
                }
            }
        }
        list.paths.push(PathBuf::from(image));
        list.labels.push(set);
    }
    Ok(list)
}

/// The three sets of the hashing protocol: training images, queries, and the database the queries
/// are ranked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashingSplits {
    /// Training entries.
    pub train: MultiLabelList,
    /// Query entries.
    pub query: MultiLabelList,
    /// Database entries.
    pub database: MultiLabelList,
}

/// Reads DeepHash-style `train.txt`, `test.txt` (queries) and `database.txt` from `dir`.
pub fn read_hashing_splits(
    dir: impl AsRef<Path>,
    num_classes: usize,
) -> Result<HashingSplits, DataError> {
    let dir = dir.as_ref();
    Ok(HashingSplits {
        train: read_multilabel_list(dir.join("train.txt"), num_classes)?,
        query: read_multilabel_list(dir.join("test.txt"), num_classes)?,
        database: read_multilabel_list(dir.join("database.txt"), num_classes)?,
    })
}

/// The usual protocol from one list: `queries` entries drawn at random are the queries, the rest
/// the database, and `train` entries drawn from the database train the model. Entries without a
/// label are dropped first (they are relevant to nothing). Draws come from ChaCha8(`seed`).
pub fn split_for_hashing(
    list: &MultiLabelList,
    queries: usize,
    train: usize,
    seed: u64,
) -> Result<HashingSplits, DataError> {
    let mut order: Vec<usize> = (0..list.len())
        .filter(|&i| !list.labels[i].is_empty())
        .collect();
    if queries == 0 || train == 0 || queries + train > order.len() {
        return Err(DataError::InvalidSplit(format!(
            "{queries} queries and {train} training entries from {} labelled entries: need \
             both > 0 and their sum at most the number of entries",
            order.len()
        )));
    }
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (query, database) = order.split_at(queries);
    Ok(HashingSplits {
        train: list.select(&database[..train]),
        query: list.select(query),
        database: list.select(database),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "a.jpg 1 0 1\n\n  b.png 0 0 0  \nc/d.jpg 0 1 0\n").unwrap();
        let list = read_multilabel_list(&path, 3).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list.paths[2], PathBuf::from("c/d.jpg"));
        assert_eq!(list.labels, vec![vec![0, 2], vec![], vec![1]]);
        assert_eq!(list.multi_hot()[..3], [1.0, 0.0, 1.0]);

        std::fs::write(&path, "a.jpg 1 0 1\nb.jpg 1 0\n").unwrap();
        let text = read_multilabel_list(&path, 3).unwrap_err().to_string();
        assert!(
            text.contains("list.txt") && text.contains("line 2") && text.contains("2 labels"),
            "{text}"
        );
        std::fs::write(&path, "a.jpg 1 0 2\n").unwrap();
        let text = read_multilabel_list(&path, 3).unwrap_err().to_string();
        assert!(
            text.contains("line 1") && text.contains("label 3 is `2`"),
            "{text}"
        );
        assert!(matches!(
            read_multilabel_list(dir.path().join("missing.txt"), 3),
            Err(DataError::Io { .. })
        ));
    }

    #[test]
    fn hashing_split_is_seeded_disjoint_and_nested() {
        let list = MultiLabelList {
            paths: (0..50).map(|i| PathBuf::from(format!("{i}.jpg"))).collect(),
            labels: (0..50)
                .map(|i| if i % 10 == 0 { vec![] } else { vec![i % 3] })
                .collect(),
            num_classes: 3,
        };
        let s = split_for_hashing(&list, 5, 20, 7).unwrap();
        assert_eq!(
            (s.query.len(), s.train.len(), s.database.len()),
            (5, 20, 40)
        );
        for q in &s.query.paths {
            assert!(!s.database.paths.contains(q), "query {q:?} in the database");
        }
        for t in &s.train.paths {
            assert!(
                s.database.paths.contains(t),
                "training entry {t:?} outside the database"
            );
        }
        assert!(s.database.labels.iter().all(|l| !l.is_empty()));
        assert_eq!(s, split_for_hashing(&list, 5, 20, 7).unwrap());
        assert_ne!(s.query, split_for_hashing(&list, 5, 20, 8).unwrap().query);
        assert!(matches!(
            split_for_hashing(&list, 30, 20, 7),
            Err(DataError::InvalidSplit(_))
        ));
    }
}
