//! Image folders (`root/<class>/<image>`, PNG or JPEG of any size), loaded lazily: opening a
//! folder lists the files; images are decoded, resized and centre-cropped when a batch asks for
//! them, in parallel. ImageNet-style folders (and ImageNet-100 for retrieval) use this layout.
//!
//! Preprocessing follows torchvision's evaluation transform, scaled to the model's input side
//! `s`: the shorter side is resized to `round(s · 256 / 224)` (bilinear), then the centre `s × s`
//! is cropped. Values are RGB in `[0, 1]`; the ImageNet mean/std normalisation belongs to the
//! model wrapper, not to the data.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::{DataError, ImageDataset};

/// Largest model input side (ImageNet models use 224; the bound keeps sizes in `u32`).
const MAX_SIDE: usize = 16_384;
/// The decoder's and the resizer's allocation bound: a header or an aspect ratio that would need
/// more is refused before anything of that size is allocated (the `image` crate's own default).
const MAX_ALLOC: u64 = 512 << 20;

/// File extensions read as images (case-insensitive).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// An image folder: class names (the sub-directories, sorted) and the image files of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFolder {
    /// The folder.
    pub root: PathBuf,
    /// Class names, sorted; class `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// Image files, sorted by class then name.
    pub paths: Vec<PathBuf>,
    /// Class of each file.
    pub labels: Vec<usize>,
}

impl ImageFolder {
    /// Lists `root/<class>/<image>`. Files with other extensions (and files directly under
    /// `root`) are skipped; a root without class directories, or a class directory without an
    /// image, is an error naming it.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = root.as_ref().to_path_buf();
        let mut classes: Vec<String> = read_dir(&root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        classes.sort();
        let mut folder = ImageFolder {
            root: root.clone(),
            classes: Vec::new(),
            paths: Vec::new(),
            labels: Vec::new(),
        };
        for name in classes {
            let mut files: Vec<PathBuf> = read_dir(&root.join(&name))?
                .into_iter()
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if files.is_empty() {
                // As torchvision's ImageFolder: an empty class is a mistake, not a class.
                return Err(DataError::Malformed {
                    path: root.join(&name),
                    position: "directory".into(),
                    message: "class folder holds no PNG or JPEG image".into(),
                });
            }
            files.sort();
            let class = folder.classes.len();
            folder
                .labels
                .extend(std::iter::repeat_n(class, files.len()));
            folder.paths.extend(files);
            folder.classes.push(name);
        }
        if folder.paths.is_empty() {
            return Err(DataError::Malformed {
                path: root,
                position: "directory".into(),
                message: "no `<class>/<image>` files (PNG or JPEG) found".into(),
            });
        }
        Ok(folder)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the folder holds no images.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Decodes the images at `indices` (in parallel) into `side × side × 3` RGB images.
    pub fn load(&self, indices: &[usize], side: usize) -> Result<ImageDataset, DataError> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::InvalidSplit(format!(
                "index {i} beyond the {} images of {}",
                self.len(),
                self.root.display()
            )));
        }
        let paths: Vec<&Path> = indices.iter().map(|&i| self.paths[i].as_path()).collect();
        Ok(ImageDataset {
            images: load_images(&paths, side)?,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: 3,
            height: side,
            width: side,
            num_classes: self.classes.len(),
        })
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()).map_err(io))
        .collect()
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// Decodes, resizes (shorter side to `round(side · 256 / 224)`), centre-crops to `side × side`
/// and concatenates the images, in parallel, as values in `[0, 1]`. An unreadable or
/// undecodable file is an error that names it.
pub fn load_images(paths: &[&Path], side: usize) -> Result<Vec<f32>, DataError> {
    Ok(load_images_u8(paths, side, &|_| {})?
        .into_iter()
        .map(|v| f32::from(v) / 255.0)
        .collect())
}

/// [`load_images`] as 8-bit RGB (`side × side × 3` bytes per image, a quarter of the memory of
/// `f32`), calling `progress(k)` after each `k` images decoded (from any thread).
pub fn load_images_u8(
    paths: &[&Path],
    side: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<u8>, DataError> {
    if !(1..=MAX_SIDE).contains(&side) {
        return Err(DataError::InvalidSplit(format!(
            "image side {side} outside 1..={MAX_SIDE}"
        )));
    }
    let per = side * side * 3;
    let mut out = vec![0u8; paths.len() * per];
    // Fixed chunks: each task decodes its images straight into its part of the output.
    const CHUNK: usize = 16;
    out.par_chunks_mut(per * CHUNK)
        .zip(paths.par_chunks(CHUNK))
        .try_for_each(|(dst, chunk)| {
            for (d, path) in dst.chunks_mut(per).zip(chunk) {
                load_image(path, side, d)?;
            }
            progress(chunk.len());
            Ok::<(), DataError>(())
        })?;
    Ok(out)
}

fn load_image(path: &Path, side: usize, out: &mut [u8]) -> Result<(), DataError> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| DataError::Malformed {
            path: path.to_path_buf(),
            position: "image data".into(),
            message: e.to_string(),
        })?
        .to_rgb8();
    let (w, h) = decoded.dimensions();
    if w == 0 || h == 0 {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            position: "image size".into(),
            message: "the image is empty".into(),
        });
    }
    let short = (side as f64 * 256.0 / 224.0).round().max(side as f64) as u32;
    let (nw, nh) = if w <= h {
        (
            short,
            ((h as f64 * short as f64 / w as f64).round() as u32).max(short),
        )
    } else {
        (
            ((w as f64 * short as f64 / h as f64).round() as u32).max(short),
            short,
        )
    };
    let bytes = 3 * u64::from(nw) * u64::from(nh);
    if bytes > MAX_ALLOC {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            position: "image size".into(),
            message: format!(
                "aspect ratio of {w} × {h}: resizing the shorter side to {short} needs \
                 {nw} × {nh} pixels ({} MB, over {} MB)",
                bytes >> 20,
                MAX_ALLOC >> 20
            ),
        });
    }
    let resized = image::imageops::resize(&decoded, nw, nh, FilterType::Triangle);
    let side32 = side as u32;
    let (x0, y0) = ((nw - side32) / 2, (nh - side32) / 2);
    let mut k = 0;
    for y in y0..y0 + side32 {
        for x in x0..x0 + side32 {
            out[k..k + 3].copy_from_slice(&resized.get_pixel(x, y).0);
            k += 3;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn solid(w: u32, h: u32, colour: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb(colour))
    }

    #[test]
    fn lists_classes_and_loads_resized_crops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for class in ["dog", "cat"] {
            std::fs::create_dir(root.join(class)).unwrap();
        }
        solid(40, 20, [255, 0, 0])
            .save(root.join("cat/b.png"))
            .unwrap();
        solid(9, 30, [0, 128, 255])
            .save(root.join("cat/a.JPG"))
            .unwrap();
        solid(16, 16, [10, 20, 30])
            .save(root.join("dog/x.png"))
            .unwrap();
        std::fs::write(root.join("dog/notes.txt"), "not an image").unwrap();
        std::fs::write(root.join("stray.png"), "a file at the root").unwrap();

        let folder = ImageFolder::open(root).unwrap();
        assert_eq!(folder.classes, vec!["cat", "dog"]);
        assert_eq!(folder.labels, vec![0, 0, 1]);
        assert!(folder.paths[0].ends_with("cat/a.JPG"));

        let data = folder.load(&[1, 2, 0], 8).unwrap();
        assert_eq!(
            (data.len(), data.height, data.width, data.channels),
            (3, 8, 8, 3)
        );
        assert_eq!(data.labels, vec![0, 1, 0]);
        // A solid image stays solid through resizing and cropping (JPEG only approximately).
        let red = data.image(0);
        assert!(red.chunks(3).all(|p| p == [1.0, 0.0, 0.0]), "{red:?}");
        let dark = data.image(1);
        assert!(
            dark.chunks(3)
                .all(|p| p == [10.0 / 255.0, 20.0 / 255.0, 30.0 / 255.0])
        );
        let blue = data.image(2);
        assert!(
            blue.chunks(3)
                .all(|p| (p[2] - 1.0).abs() < 0.05 && p[0] < 0.05)
        );
        assert!(folder.load(&[3], 8).is_err());
    }

    #[test]
    fn centre_crop_keeps_the_middle() {
        // A horizontal ramp, value 8·x at column x of a 30 × 10 image. The shorter side goes to
        // round(4 · 256 / 224) = 5 (30 × 10 → 15 × 5); output column x averages source columns
        // around 2x + 0.5, where the ramp is 8·(2x + 0.5); the 4 × 4 crop starts at column 5.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let img = RgbImage::from_fn(30, 10, |x, _| Rgb([(8 * x) as u8; 3]));
        img.save(dir.path().join("c/i.png")).unwrap();
        let data = ImageFolder::open(dir.path())
            .unwrap()
            .load(&[0], 4)
            .unwrap();
        for y in 0..4 {
            for x in 0..4 {
                let got = data.images[(y * 4 + x) * 3] * 255.0;
                let want = 8.0 * (2.0 * (x + 5) as f32 + 0.5);
                assert!((got - want).abs() <= 2.0, "({y}, {x}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn unreadable_images_and_empty_roots_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ImageFolder::open(dir.path()),
            Err(DataError::Malformed { .. })
        ));
        assert!(matches!(
            ImageFolder::open(dir.path().join("missing")),
            Err(DataError::Io { .. })
        ));
        std::fs::create_dir(dir.path().join("c")).unwrap();
        let err = ImageFolder::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("holds no PNG or JPEG") && err.contains("/c"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("c/broken.png"),
            [0x89, b'P', b'N', b'G', 0, 1, 2],
        )
        .unwrap();
        let folder = ImageFolder::open(dir.path()).unwrap();
        let text = folder.load(&[0], 8).unwrap_err().to_string();
        assert!(text.contains("broken.png"), "{text}");
    }
}
