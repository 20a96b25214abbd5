//! The `--device` choice of the examples.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use super::error::{StudyError, invalid};

/// Which backend runs a study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// burn's Flex CPU backend (always available; the default).
    #[default]
    Cpu,
    /// wgpu (needs the `wgpu` feature).
    Wgpu,
    /// CUDA device 0 (needs the `cuda` feature).
    Cuda,
}

impl DeviceChoice {
    /// The autodiff device, or an error naming the missing cargo feature.
    pub fn device(self) -> Result<Device, StudyError> {
        match self {
            Self::Cpu => Ok(Device::flex().autodiff()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff()),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0).autodiff()),
            #[allow(unreachable_patterns)]
            other => Err(invalid(
                "device",
                other,
                &format!("this build lacks the `{other}` cargo feature (`--features {other}`)"),
            )),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

impl FromStr for DeviceChoice {
    type Err = StudyError;

    fn from_str(s: &str) -> Result<Self, StudyError> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(invalid("device", s, "expected cpu, wgpu or cuda")),
        }
    }
}
