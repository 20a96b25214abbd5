//! Sharded evaluation: `--shard I/N` attacks one of `N` parts of the attacked images, and a merge
//! step joins the parts into the table the unsharded run would have written.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use signsym_attacks::{EntryReport, ObfuscationFlag, obfuscation_flags, worst_case_flags};

use super::error::{StudyError, invalid};

/// How far robust accuracy under the model's own gradient may exceed a reference source's
/// before a budget is flagged as obfuscated (the attack suite's default).
pub(crate) const OBFUSCATION_MARGIN: f64 = 0.05;

/// Part `index` (from 1) of `count` of an evaluation's images, written `I/N`.
///
/// Images are split in whole units (the attack batch): a shard's batches are exactly batches of
/// the unsharded run, so every random draw and every reduction an attack makes over a batch is
/// the same, and the merged counts equal the unsharded ones.
///
/// ```
/// use signsym::study::Shard;
/// let shard: Shard = "2/3".parse()?;
/// // 10 images in units of 2: units 0..5, the second third is unit 1..3.
/// assert_eq!(shard.range(10, 2), 2..6);
/// assert_eq!(Shard::WHOLE.range(10, 2), 0..10);
/// assert!("4/3".parse::<Shard>().is_err());
/// # Ok::<(), signsym::study::StudyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// The whole evaluation (`1/1`).
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Shard `index` of `count`; `1 ≤ index ≤ count`.
    pub fn new(index: usize, count: usize) -> Result<Self, StudyError> {
        if count == 0 || index == 0 || index > count {
            return Err(invalid(
                "shard",
                format!("{index}/{count}"),
                "must be I/N with 1 ≤ I ≤ N",
            ));
        }
        Ok(Self { index, count })
    }

    /// Its number, from 1.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// This shard's images among `n`, in whole units of `unit`: of the `U = ⌈n / unit⌉` units,
    /// those from `⌊(I − 1)·U / N⌋` to `⌊I·U / N⌋`. Consecutive shards tile `0..n` in order; a
    /// shard may be empty when there are fewer units than shards.
    pub fn range(&self, n: usize, unit: usize) -> Range<usize> {
        let unit = unit.max(1);
        let units = n.div_ceil(unit);
        let first = (self.index - 1) * units / self.count;
        let last = self.index * units / self.count;
        (first * unit).min(n)..(last * unit).min(n)
    }

    /// This shard's batches of `unit` images among `n`, in order (the unsharded run's batches).
    pub fn batches(&self, n: usize, unit: usize) -> impl Iterator<Item = Range<usize>> {
        let range = self.range(n, unit);
        let unit = unit.max(1);
        range
            .clone()
            .step_by(unit)
            .map(move |start| start..(start + unit).min(range.end))
    }

    /// `shard-I-of-N`, the file-name tag of this shard's outputs.
    pub fn tag(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = StudyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: Option<&str>| part.and_then(|p| p.trim().parse::<usize>().ok());
        let mut parts = s.split('/');
        match (parse(parts.next()), parse(parts.next()), parts.next()) {
            (Some(index), Some(count), None) => Shard::new(index, count),
            _ => Err(invalid("shard", s, "must be I/N with 1 ≤ I ≤ N")),
        }
    }
}

impl TryFrom<String> for Shard {
    type Error = StudyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Shard> for String {
    fn from(shard: Shard) -> Self {
        shard.to_string()
    }
}

/// The flags the attack suite raises for its (merged) entries at `epsilons`: per attack, and
/// for the per-sample worst case of the feedback-gradient entries.
pub(crate) fn obfuscation(entries: &[EntryReport], epsilons: &[f64]) -> Vec<ObfuscationFlag> {
    let per_sample: Vec<Vec<Vec<bool>>> = entries.iter().map(|e| e.per_sample.clone()).collect();
    let mut flags = obfuscation_flags(entries, OBFUSCATION_MARGIN);
    flags.extend(worst_case_flags(
        entries,
        &per_sample,
        epsilons,
        OBFUSCATION_MARGIN,
    ));
    flags
}

/// The shard files `<dir>/<key>.shard-I-of-N.json` of one evaluation: their paths for shards
/// `1/N … N/N` in order, or an error naming the key and the shards found when one is missing,
/// doubled or of another `N`.
pub(crate) fn shard_files(
    dir: &std::path::Path,
    key: &str,
) -> Result<Vec<std::path::PathBuf>, StudyError> {
    let listing = std::fs::read_dir(dir).map_err(|e| {
        invalid(
            "out",
            dir.display(),
            &format!("holds no shards to merge: {e}"),
        )
    })?;
    let prefix = format!("{key}.shard-");
    let mut found: Vec<Shard> = Vec::new();
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(tag) = name
            .strip_prefix(&prefix)
            .and_then(|t| t.strip_suffix(".json"))
        {
            let shard = tag.replacen("-of-", "/", 1).parse::<Shard>().map_err(|_| {
                invalid("shard file", &name, "is not named <key>.shard-I-of-N.json")
            })?;
            found.push(shard);
        }
    }
    found.sort();
    let count = found.first().map_or(0, |s| s.count());
    let expected = (1..=count)
        .map(|i| Shard::new(i, count))
        .collect::<Result<Vec<_>, _>>()?;
    if count == 0 || found != expected {
        let listed: Vec<String> = found.iter().map(|s| s.to_string()).collect();
        return Err(invalid(
            "shards",
            format!("{key}: {}", listed.join(", ")),
            &format!(
                "{} needs one file per shard 1/N … N/N of one N",
                dir.display()
            ),
        ));
    }
    Ok(found
        .iter()
        .map(|s| dir.join(format!("{key}.{}.json", s.tag())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_images_in_whole_units() {
        for (n, unit, count) in [(250, 64, 2), (250, 64, 7), (16, 2, 3), (3, 4, 2), (0, 8, 2)] {
            let ranges: Vec<Range<usize>> = (1..=count)
                .map(|i| Shard::new(i, count).unwrap().range(n, unit))
                .collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, n);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{n} {unit} {count}: {ranges:?}");
            }
            for r in &ranges {
                // Every boundary but the end of the data is a unit boundary.
                assert!(
                    r.start % unit == 0 && (r.end % unit == 0 || r.end == n),
                    "{r:?}"
                );
            }
        }
        assert_eq!(Shard::new(1, 2).unwrap().range(250, 64), 0..128);
        assert_eq!(Shard::new(2, 2).unwrap().range(250, 64), 128..250);
        // Fewer units than shards: some shards are empty, none is split.
        assert_eq!(Shard::new(1, 2).unwrap().range(20, 64), 0..0);
        assert_eq!(Shard::new(2, 2).unwrap().range(20, 64), 0..20);
        let batches: Vec<Range<usize>> = Shard::new(2, 3).unwrap().batches(10, 2).collect();
        assert_eq!(batches, [2..4, 4..6]);
        let last: Vec<Range<usize>> = Shard::new(3, 3).unwrap().batches(11, 4).collect();
        assert_eq!(last, vec![8..11; 1]);
    }

    #[test]
    fn parses_and_refuses() {
        let s: Shard = " 3 / 4".parse().unwrap();
        assert_eq!(
            (s.index(), s.count(), s.to_string(), s.tag()),
            (3, 4, "3/4".into(), "shard-3-of-4".into())
        );
        for bad in ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"3/4\"");
        assert_eq!(serde_json::from_str::<Shard>(&json).unwrap(), s);
        assert!(serde_json::from_str::<Shard>("\"5/4\"").is_err());
    }
}
