//! Streaming top-k accuracy on tensors.

use burn::tensor::{Device, Int, Tensor, TensorData};
use signsym_metrics::TopKAccuracy;

#[test]
fn streams_over_batches_and_breaks_ties_by_class_index() {
    let device = Device::flex();
    let mut acc = TopKAccuracy::new(&[1, 3]).unwrap();
    let logits = Tensor::<2>::from_data(
        TensorData::new(
            vec![
                0.1f32, 0.9, 0.3, 0.2, // target 1: top-1
                0.5, 0.5, 0.1, 0.0, // target 1 ties class 0, which ranks first: top-2
                0.4, 0.3, 0.2, 0.1, // target 3: rank 4
            ],
            [3, 4],
        ),
        &device,
    );
    acc.update(logits, Tensor::<1, Int>::from_ints([1, 1, 3], &device))
        .unwrap();
    assert_eq!(acc.correct(1), Some(1));
    assert_eq!(acc.correct(3), Some(2));
    acc.update_scores(&[0.0, 1.0, 0.0, 0.0], 4, &[1]).unwrap();
    assert_eq!(acc.accuracy(1), Some(0.5));
    assert_eq!(acc.accuracy(3), Some(0.75));
    assert_eq!(acc.accuracy(2), None);
    assert!(acc.update_scores(&[0.0, f32::NAN], 2, &[0]).is_err());
    assert!(acc.update_scores(&[0.0, 1.0], 2, &[2]).is_err());
    assert!(TopKAccuracy::new(&[0]).is_err());
}
