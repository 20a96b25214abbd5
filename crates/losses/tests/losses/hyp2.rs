//! HyP²: a hand-computed value, finite-difference gradients, the code table, bad input.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use signsym_losses::{
    HyP2, HyP2Config, LossError, PairSelection, TaskLoss, code_table_threshold, plotkin_code_size,
};

fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_scalar::<f32>())
}

fn hand_case(pairs: PairSelection, device: &Device) -> (HyP2, Tensor<2>, Tensor<2>) {
    let mut loss = HyP2Config::new(3)
        .with_bits(2)
        .with_threshold(Some(0.0))
        .with_pairs(pairs)
        .init(device)
        .unwrap();
    // Proxies e1, e2, −e1.
    loss.proxies = Param::from_tensor(tensor(&[1.0, 0.0, 0.0, 1.0, -1.0, 0.0], [3, 2], device));
    // Sample 0 = (1, 1) with labels {0, 1}; sample 1 = (0, 2) with label {2}.
    let codes = tensor(&[1.0, 1.0, 0.0, 2.0], [2, 2], device);
    let labels = tensor(&[1.0, 1.0, 0.0, 0.0, 0.0, 1.0], [2, 3], device);
    (loss, codes, labels)
}

#[test]
fn value_matches_a_hand_computed_case() {
    let device = Device::flex();
    let r = 0.5f64.sqrt();
    // Cosines: sample 0 -> (r, r, −r); sample 1 -> (0, 1, 0).
    // Positives (0,0), (0,1), (1,2): mean(1 − r, 1 − r, 1).
    let positive = ((1.0 - r) * 2.0 + 1.0) / 3.0;
    // Negatives (0,2), (1,0), (1,1): mean(relu(−r), relu(0), relu(1)).
    let negative = 1.0 / 3.0;
    // The samples share no label: the two ordered pairs have cosine r; β = 0.5.
    let pairwise = 0.5 * (2.0 * r) / 2.0;

    let (loss, codes, labels) = hand_case(PairSelection::AllLabelled, &device);
    let value = scalar(loss.loss(codes, labels).unwrap());
    assert!(
        (value - (positive + negative + pairwise)).abs() < 1e-6,
        "{value}"
    );

    // The official selection only pairs samples with two or more labels: here none.
    let (loss, codes, labels) = hand_case(PairSelection::MultiLabelOnly, &device);
    let value = scalar(loss.loss(codes, labels).unwrap());
    assert!((value - (positive + negative)).abs() < 1e-6, "{value}");
}

#[test]
fn gradients_agree_with_finite_differences() {
    let device = Device::flex().autodiff();
    let mut loss = HyP2Config::new(4)
        .with_bits(6)
        .with_threshold(Some(0.1))
        .with_seed(5)
        .init(&device)
        .unwrap();
    let codes: Vec<f32> = (0..30)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 5.0)
        .collect();
    // Five samples; three with two labels so the pairwise term is active.
    let labels = [
        1., 1., 0., 0., //
        0., 0., 1., 1., //
        1., 0., 1., 0., //
        0., 1., 0., 0., //
        0., 0., 0., 1.,
    ];
    let labels_t = tensor(&labels, [5, 4], &device);
    let proxies = loss.proxies.val().try_to_vec_as::<f32>().unwrap();

    let x = tensor(&codes, [5, 6], &device).require_grad();
    loss.proxies = Param::from_tensor(tensor(&proxies, [4, 6], &device));
    let grads = loss.loss(x.clone(), labels_t.clone()).unwrap().backward();
    let dx = x.grad(&grads).unwrap().try_to_vec_as::<f32>().unwrap();
    let dp = loss
        .proxies
        .val()
        .grad(&grads)
        .unwrap()
        .try_to_vec_as::<f32>()
        .unwrap();

    let value = |c: &[f32], p: &[f32]| -> f64 {
        let plain = Device::flex();
        let mut l = HyP2Config::new(4)
            .with_bits(6)
            .with_threshold(Some(0.1))
            .init(&plain)
            .unwrap();
        l.proxies = Param::from_tensor(tensor(p, [4, 6], &plain));
        scalar(
            l.loss(tensor(c, [5, 6], &plain), tensor(&labels, [5, 4], &plain))
                .unwrap(),
        )
    };
    let h = 1e-2f32;
    let mut worst = 0.0f64;
    for i in 0..codes.len() {
        let (mut up, mut down) = (codes.clone(), codes.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (value(&up, &proxies) - value(&down, &proxies)) / (2.0 * f64::from(h));
        worst = worst.max((fd - f64::from(dx[i])).abs());
    }
    for i in 0..proxies.len() {
        let (mut up, mut down) = (proxies.clone(), proxies.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (value(&codes, &up) - value(&codes, &down)) / (2.0 * f64::from(h));
        worst = worst.max((fd - f64::from(dp[i])).abs());
    }
    assert!(worst < 2e-3, "largest gradient error {worst}");
    assert!(
        dx.iter().any(|g| g.abs() > 1e-2),
        "gradient is not trivially zero"
    );
}

#[test]
fn code_table_follows_the_plotkin_bound() {
    // Classic values: A(16, 8) = 32 (first-order Reed–Muller), A(8, 5) = A(9, 6) = 4,
    // A(16, 10) = 4, A(32, 16) = 64.
    assert_eq!(plotkin_code_size(16, 8), Some(32));
    assert_eq!(plotkin_code_size(8, 5), Some(4));
    assert_eq!(plotkin_code_size(16, 10), Some(4));
    assert_eq!(plotkin_code_size(32, 16), Some(64));
    assert_eq!(plotkin_code_size(32, 10), None);
    // Two proxies can be antipodal.
    assert_eq!(code_table_threshold(32, 2), Some(-1.0));
    assert_eq!(code_table_threshold(32, 8), Some(1.0 - 36.0 / 32.0));
    assert_eq!(code_table_threshold(64, 100), Some(0.0));
    assert_eq!(code_table_threshold(48, 128), None);
    let err = HyP2Config::new(80).init(&Device::flex()).unwrap_err();
    assert!(
        matches!(
            err,
            LossError::UnknownThreshold {
                bits: 32,
                log2: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        HyP2Config::new(80)
            .with_threshold(Some(0.2))
            .init(&Device::flex())
            .is_ok()
    );
}

#[test]
fn proxies_are_seeded_and_scaled_like_kaiming_fan_out() {
    let device = Device::flex();
    let a = HyP2Config::new(50)
        .with_bits(64)
        .with_threshold(Some(0.0))
        .init(&device)
        .unwrap();
    let b = HyP2Config::new(50)
        .with_bits(64)
        .with_threshold(Some(0.0))
        .init(&device)
        .unwrap();
    let va = a.proxies.val().try_to_vec_as::<f32>().unwrap();
    assert_eq!(va, b.proxies.val().try_to_vec_as::<f32>().unwrap());
    let var = va.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / va.len() as f64;
    // N(0, 2/50): variance 0.04, ±10 % over 3,200 draws.
    assert!((var / 0.04 - 1.0).abs() < 0.1, "{var}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = Device::flex();
    let loss = HyP2Config::new(3)
        .with_bits(2)
        .with_threshold(Some(0.0))
        .init(&device)
        .unwrap();
    let codes = Tensor::<2>::ones([2, 2], &device);
    let not_binary = tensor(&[1.0, 0.5, 0.0, 0.0, 1.0, 0.0], [2, 3], &device);
    assert!(matches!(
        loss.loss(codes.clone(), not_binary),
        Err(LossError::NotMultiHot { index: 1, .. })
    ));
    let wrong_classes = Tensor::<2>::ones([2, 4], &device);
    assert!(matches!(
        loss.loss(codes, wrong_classes),
        Err(LossError::ShapeMismatch { .. })
    ));
    assert!(
        HyP2Config::new(3)
            .with_threshold(Some(1.5))
            .init(&device)
            .is_err()
    );
    assert!(HyP2Config::new(3).with_beta(-1.0).init(&device).is_err());
}
