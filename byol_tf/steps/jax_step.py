"""The JAX step, stateless for `jax.jit` (what Keras' JAX trainer calls):
`train_step(model, state, data)` → (logs, new state), `state` the values of the model's
(trainable, non-trainable, optimizer, metric) variables.

The model's own methods run inside `keras.StatelessScope`s that map its variables to those
values and record their assignments (batch-norm statistics, the augmentation seed, the
optimizer update, EMA targets and queues, the metrics)."""

import jax
import keras
from keras import ops


def stateless(variables, values, fn, collect):
    """Runs `fn()` with `variables` holding `values`. Returns fn's result and, for each list
    in `collect`, its variables' values after fn: assigned ones updated, the others as given."""
    given = {id(v): value for v, value in zip(variables, values)}
    with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
        result = fn()
    after = []
    for group in collect:
        current = [scope.get_current_value(v) for v in group]
        after.append([given[id(v)] if c is None else c for v, c in zip(group, current)])
    return result, tuple(after)


def train_step(model, state, data):
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        raise NotImplementedError("loss scaling (mixed_float16) is not implemented in the JAX "
                                  "step; use mixed_bfloat16")
    trainable, non_trainable, optimizer_values, metric_values = state
    trainable_vars, non_trainable_vars = model.trainable_variables, model.non_trainable_variables
    traced = {}

    def loss_fn(trainable, non_trainable):
        def forward():
            view1, view2, labels = model.make_views(data)
            traced["labels"] = labels is not None  # static: decided by the data's structure
            targets = model.target_forward(view1, view2)
            loss, logs = model.loss_and_logs(view1, view2, targets, labels)
            return loss, (logs, targets)
        (loss, aux), (non_trainable,) = stateless(
            trainable_vars + non_trainable_vars, [*trainable, *non_trainable], forward,
            (non_trainable_vars,))
        return loss, (aux, non_trainable)

    (_, ((logs, targets), non_trainable)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(trainable, non_trainable)
    variables = model.step_variables(traced["labels"])
    grads_by_id = {id(v): g for v, g in zip(trainable_vars, grads)}
    optimizer_vars, metric_vars = model.optimizer.variables, model.metrics_variables

    def update():
        scalars = model.step_scalars(model.optimizer.iterations)
        learning_rate = ops.convert_to_tensor(model.optimizer.learning_rate)
        model.optimizer.apply([grads_by_id[id(v)] for v in variables], variables)
        model.after_update(targets, scalars)
        return model.update_metrics(logs, scalars, learning_rate)

    return stateless(
        trainable_vars + non_trainable_vars + optimizer_vars + metric_vars,
        [*trainable, *non_trainable, *optimizer_values, *metric_values], update,
        (trainable_vars, non_trainable_vars, optimizer_vars, metric_vars))


def test_step(model, state, data):
    trainable, non_trainable, metric_values = state

    def logs():
        view1, view2, labels = model.make_views(data)
        targets = model.target_forward(view1, view2)
        _, logs = model.loss_and_logs(view1, view2, targets, labels)
        return model.update_metrics(logs, model.step_scalars(model.optimizer.iterations),
                            model.optimizer.learning_rate)

    variables = model.trainable_variables + model.non_trainable_variables + model.metrics_variables
    logs, (non_trainable, metric_values) = stateless(
        variables, [*trainable, *non_trainable, *metric_values], logs,
        (model.non_trainable_variables, model.metrics_variables))
    return logs, (trainable, non_trainable, metric_values)


def initial_state(model):
    """The `state` that `train_step` takes: the values of the (trainable, non-trainable,
    optimizer, metric) variables, the optimizer built."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return tuple([v.value for v in group] for group in (
        model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
        model.metrics_variables))
