"""LARS as in DeepMind's BYOL (`byol/utils/optimizers.py`), as a Keras 3 optimizer; and
`AdamW`, Keras' AdamW built in fewer ops on TensorFlow (its docstring says how).

For every variable w with gradient g (lr = the schedule's value at this step):

    g ← g + wd·w                                  (not for excluded variables)
    g ← g · η‖w‖/‖g‖   (1 if ‖w‖ = 0 or ‖g‖ = 0)   (not for excluded variables)
    m ← μ·m + g
    w ← w − lr·m

Excluded from both weight decay and the trust ratio: biases and normalisation
parameters, matched on the variable's path (`exclude`, regular expressions).
"""

import re

import keras
from keras import ops

from byol_tf import compat
from byol_tf.schedules import PerOptimizerStep

DEFAULT_EXCLUDE = (r"(^|/)bias$", r"(^|/)(gamma|beta)$", r"norm", r"_bn\d*(/|$)")


@keras.saving.register_keras_serializable(package="byol_tf")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017), official BYOL variant.

    Args:
      learning_rate: float or `LearningRateSchedule`. Defaults to 0.2.
      weight_decay: float. Added to the gradient (coupled), before the trust ratio.
        Defaults to 1.5e-6.
      momentum: float. Heavy-ball momentum μ. Defaults to 0.9.
      eta: float. Trust coefficient η. Defaults to 1e-3.
      exclude: regexes searched in `variable.path`; a match skips weight decay and the
        trust ratio. Defaults to biases and normalisation parameters.
      name: str. Defaults to "lars".
    """

    def __init__(self, learning_rate=0.2, weight_decay=1.5e-6, momentum=0.9, eta=1e-3,
                 exclude=DEFAULT_EXCLUDE, name="lars", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.lars_weight_decay = weight_decay
        self.momentum = momentum
        self.eta = eta
        self.exclude = tuple(exclude)
        self._exclude_re = [re.compile(p) for p in self.exclude]

    def is_excluded(self, variable):
        """True for variables that get neither weight decay nor the trust ratio."""
        path = getattr(variable, "path", variable.name)
        return any(p.search(path) for p in self._exclude_re)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, name="momentum")
                          for v in variables]
        # Decided here, on Keras variables: update_step may see backend variables
        # (tf.Variable) that no longer carry the Keras path.
        self._excluded = [self.is_excluded(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        # Python floats enter each product in the variable's dtype, exactly (ops.cast of a
        # Python float would round it to float32 first: 0.9 → 0.8999999761581421).
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        index = compat.variable_index(self, variable)
        if not self._excluded[index]:
            g = g + self.lars_weight_decay * variable
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(g)))
            safe = (w_norm > 0) & (g_norm > 0)
            trust = ops.where(safe, self.eta * w_norm / ops.where(safe, g_norm, 1.0), 1.0)
            g = g * trust
        m = self.momentums[index]
        self.assign(m, self.momentum * m + g)
        self.assign_sub(variable, lr * m)

    def get_config(self):
        config = super().get_config()
        config.update(weight_decay=self.lars_weight_decay, momentum=self.momentum,
                      eta=self.eta, exclude=list(self.exclude))
        return config


def get(name, learning_rate, weight_decay, accumulation_steps=1):
    """Optimizer by name: "lars" (official), "sgd" (plain), "adamw", "lamb". With
    `accumulation_steps` N > 1 it moves the weights once every N batches, by the mean of
    their gradients (Keras' `gradient_accumulation_steps`); its `iterations` and a
    learning-rate schedule (`schedules.PerOptimizerStep`) count those optimizer steps."""
    kwargs = {}
    if accumulation_steps > 1:
        kwargs = dict(gradient_accumulation_steps=accumulation_steps)
        if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            learning_rate = PerOptimizerStep(learning_rate, accumulation_steps)
    if name == "lars":
        return LARS(learning_rate, weight_decay=weight_decay, **kwargs)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, **kwargs)
    if name == "adamw":
        return AdamW(learning_rate, weight_decay=weight_decay, **kwargs)
    if name == "lamb":
        return keras.optimizers.Lamb(learning_rate, **kwargs)
    raise ValueError(f"Unknown optimizer {name!r}; known: lars, sgd, adamw, lamb")


@keras.saving.register_keras_serializable(package="byol_tf")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW (decoupled weight decay, then Adam), the same update, built to trace and
    run in fewer ops on the TensorFlow backend:

        w ← w − wd·lr·w                       (not for excluded variables)
        m ← m + (1−β1)(g − m);  v ← v + (1−β2)(g² − v)
        w ← w − lr·√(1−β2ᵏ)/(1−β1ᵏ) · m / (√v + ε)

    The learning rate is read once per step for the weight decay (Keras evaluates the
    schedule again for every variable), and each variable's Adam update is TensorFlow's fused
    kernel (`ResourceApplyAdam`, the same formula; Keras builds ~20 ops per variable). That
    kernel forms 1−β1 and 1−β2 in float32, Keras in float64 and then rounds: the moments'
    rates differ by ≤ 5e-5 relative (β2 = 0.999). Other backends, and `amsgrad`, run Keras'
    own update."""

    def _apply_weight_decay(self, variables):
        if keras.backend.backend() != "tensorflow" or self.weight_decay is None:
            return super()._apply_weight_decay(variables)
        import tensorflow as tf

        def decay(distribution, variables):
            rates = {}  # dtype → (wd, lr), read once

            def decay_one(variable):
                if compat.uses_weight_decay(self, variable):
                    if variable.dtype not in rates:
                        rates[variable.dtype] = (tf.cast(self.weight_decay, variable.dtype),
                                                 tf.cast(self.learning_rate, variable.dtype))
                    wd, lr = rates[variable.dtype]
                    variable.assign_sub(variable * wd * lr)

            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value
                distribution.extended.update(variable, decay_one, group=False)

        compat.merge_call(decay, self, variables)

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        m, v = compat.adam_slots(self, compat.variable_index(self, variable))
        handle = lambda x: (x.value if isinstance(x, keras.Variable) else x).handle  # noqa: E731
        tf.raw_ops.ResourceApplyAdam(
            var=handle(variable), m=handle(m), v=handle(v),
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))
