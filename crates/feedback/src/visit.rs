//! Model-wide access to feedback layers: switch rules, reseed, inspect.

use crate::layers::{
    FeedbackConv1d, FeedbackConv2d, FeedbackConvTranspose2d, FeedbackLayer, FeedbackLinear,
};
use crate::{FeedbackError, FeedbackRule, FeedbackScale, layer_seed};

/// A module that contains feedback layers and can hand each of them, with its path, to a visitor.
///
/// Implemented for the feedback layers, `Option`, `Vec` and `Box` of such modules. For your own
/// model struct, list its fields with [`feedback_module!`](crate::feedback_module):
///
/// ```
/// use burn::module::Module;
/// use burn::nn::Relu;
/// use burn::tensor::Device;
/// use signsym_feedback::layers::{FeedbackConv2d, FeedbackConv2dConfig, FeedbackLinear, FeedbackLinearConfig};
/// use signsym_feedback::{FeedbackRule, feedback_module, set_rule, set_rules, layer_summaries};
///
/// #[derive(Module, Debug)]
/// struct Net {
///     conv: FeedbackConv2d,
///     fc: FeedbackLinear,
///     act: Relu,
/// }
/// feedback_module!(Net { conv, fc });
///
/// let device = Device::flex();
/// let mut net = Net {
///     conv: FeedbackConv2dConfig::new([1, 4], [3, 3]).init(&device),
///     fc: FeedbackLinearConfig::new(16, 10).init(&device),
///     act: Relu::new(),
/// };
/// set_rule(&mut net, FeedbackRule::FrSf, 42).unwrap();
/// // BP for the last layer only:
/// set_rules(&mut net, 42, |path| if path == "fc" { FeedbackRule::Bp } else { FeedbackRule::USf }).unwrap();
/// let rules: Vec<_> = layer_summaries(&net).into_iter().map(|s| (s.path, s.rule)).collect();
/// assert_eq!(rules, vec![("conv".to_string(), FeedbackRule::USf), ("fc".to_string(), FeedbackRule::Bp)]);
/// ```
pub trait FeedbackModule {
    /// Calls `f` on every feedback layer, depth first, with its dotted path under `prefix`.
    fn visit_feedback(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn FeedbackLayer));

    /// Calls `f` on every feedback layer mutably; stops at the first error.
    fn visit_feedback_mut(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn FeedbackLayer) -> Result<(), FeedbackError>,
    ) -> Result<(), FeedbackError>;
}

/// Joins a path prefix and a field name with a dot.
pub fn join_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

macro_rules! leaf {
    ($layer:ty) => {
        impl FeedbackModule for $layer {
            fn visit_feedback(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn FeedbackLayer)) {
                f(prefix, self)
            }

            fn visit_feedback_mut(
                &mut self,
                prefix: &str,
                f: &mut dyn FnMut(&str, &mut dyn FeedbackLayer) -> Result<(), FeedbackError>,
            ) -> Result<(), FeedbackError> {
                f(prefix, self)
            }
        }
    };
}
leaf!(FeedbackLinear);
leaf!(FeedbackConv1d);
leaf!(FeedbackConv2d);
leaf!(FeedbackConvTranspose2d);

impl<T: FeedbackModule> FeedbackModule for Option<T> {
    fn visit_feedback(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn FeedbackLayer)) {
        if let Some(m) = self {
            m.visit_feedback(prefix, f)
        }
    }

    fn visit_feedback_mut(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn FeedbackLayer) -> Result<(), FeedbackError>,
    ) -> Result<(), FeedbackError> {
        match self {
            Some(m) => m.visit_feedback_mut(prefix, f),
            None => Ok(()),
        }
    }
}

impl<T: FeedbackModule> FeedbackModule for Vec<T> {
    fn visit_feedback(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn FeedbackLayer)) {
        for (i, m) in self.iter().enumerate() {
            m.visit_feedback(&join_path(prefix, &i.to_string()), f)
        }
    }

    fn visit_feedback_mut(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn FeedbackLayer) -> Result<(), FeedbackError>,
    ) -> Result<(), FeedbackError> {
        for (i, m) in self.iter_mut().enumerate() {
            m.visit_feedback_mut(&join_path(prefix, &i.to_string()), f)?;
        }
        Ok(())
    }
}

impl<T: FeedbackModule + ?Sized> FeedbackModule for Box<T> {
    fn visit_feedback(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn FeedbackLayer)) {
        (**self).visit_feedback(prefix, f)
    }

    fn visit_feedback_mut(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &mut dyn FeedbackLayer) -> Result<(), FeedbackError>,
    ) -> Result<(), FeedbackError> {
        (**self).visit_feedback_mut(prefix, f)
    }
}

/// Implements [`FeedbackModule`] for a struct by listing the fields that hold feedback layers
/// (directly or nested); their names become the path segments, as in the module's record.
#[macro_export]
macro_rules! feedback_module {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $crate::FeedbackModule for $ty {
            fn visit_feedback(
                &self,
                prefix: &str,
                f: &mut dyn FnMut(&str, &dyn $crate::layers::FeedbackLayer),
            ) {
                $(
                    $crate::FeedbackModule::visit_feedback(
                        &self.$field,
                        &$crate::join_path(prefix, stringify!($field)),
                        f,
                    );
                )*
            }

            fn visit_feedback_mut(
                &mut self,
                prefix: &str,
                f: &mut dyn FnMut(
                    &str,
                    &mut dyn $crate::layers::FeedbackLayer,
                ) -> Result<(), $crate::FeedbackError>,
            ) -> Result<(), $crate::FeedbackError> {
                $(
                    $crate::FeedbackModule::visit_feedback_mut(
                        &mut self.$field,
                        &$crate::join_path(prefix, stringify!($field)),
                        f,
                    )?;
                )*
                Ok(())
            }
        }
    };
}

/// Gives every feedback layer of `model` the rule `rule`, with its own seed derived from `seed`
/// and the layer's path (see [`layer_seed`]), so that fixed tensors differ between layers and are
/// reproducible. Weights are untouched.
pub fn set_rule<M: FeedbackModule + ?Sized>(
    model: &mut M,
    rule: FeedbackRule,
    seed: u64,
) -> Result<(), FeedbackError> {
    set_rules(model, seed, |_| rule)
}

/// Per-layer rules: `rule_of(path)` chooses each layer's rule (for example BP for the last layer).
pub fn set_rules<M: FeedbackModule + ?Sized>(
    model: &mut M,
    seed: u64,
    mut rule_of: impl FnMut(&str) -> FeedbackRule,
) -> Result<(), FeedbackError> {
    model.visit_feedback_mut("", &mut |path, layer| {
        let own_seed = layer_seed(seed, path);
        let rule = rule_of(path);
        if layer.settings().seed != own_seed {
            // Reseeding redraws under the old rule; set the rule first so only one draw happens.
            layer.set_rule(FeedbackRule::Bp)?;
            layer.set_seed(own_seed)?;
        }
        layer.set_rule(rule)
    })
}

/// Sets the feedback scale of every layer.
pub fn set_scale<M: FeedbackModule + ?Sized>(model: &mut M, scale: FeedbackScale) {
    model
        .visit_feedback_mut("", &mut |_, layer| {
            layer.set_scale(scale);
            Ok(())
        })
        .expect("setting a scale cannot fail");
}

/// Checks every layer's fixed tensor (present when needed, shaped as its weight); the error names
/// the first offending layer by path.
pub fn validate_model<M: FeedbackModule + ?Sized>(model: &M) -> Result<(), FeedbackError> {
    let mut first = None;
    model.visit_feedback("", &mut |path, layer| {
        if first.is_none()
            && let Err(e) = layer.validate()
        {
            first = Some(match e {
                FeedbackError::FeedbackShape {
                    expected, found, ..
                } => FeedbackError::FeedbackShape {
                    layer: path.to_string(),
                    expected,
                    found,
                },
                FeedbackError::MissingFeedback { rule, .. } => FeedbackError::MissingFeedback {
                    layer: path.to_string(),
                    rule,
                },
                other => other,
            });
        }
    });
    first.map_or(Ok(()), Err)
}

/// One feedback layer, as reported by [`layer_summaries`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSummary {
    /// Dotted path in the model.
    pub path: String,
    /// Layer kind (`"linear"`, `"conv2d"`, …).
    pub kind: &'static str,
    /// The layer's rule.
    pub rule: FeedbackRule,
    /// The layer's scale.
    pub scale: FeedbackScale,
    /// The weight's shape.
    pub weight_shape: Vec<usize>,
    /// Cosine between flattened weight and feedback tensor (`None` if the layer is invalid).
    pub alignment: Option<f64>,
}

/// Path, rule and weight–feedback alignment of every feedback layer, in visiting order.
pub fn layer_summaries<M: FeedbackModule + ?Sized>(model: &M) -> Vec<LayerSummary> {
    let mut out = Vec::new();
    model.visit_feedback("", &mut |path, layer| {
        out.push(LayerSummary {
            path: path.to_string(),
            kind: layer.kind(),
            rule: layer.rule(),
            scale: layer.settings().scale,
            weight_shape: layer.weight_shape(),
            alignment: layer.alignment().ok(),
        })
    });
    out
}
