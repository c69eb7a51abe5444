"""The TensorFlow step: a `GradientTape`, any `tf.distribute` strategy.

With `model.separable_views` (BYOL) and `model.per_view_gradients`, view 1's forward and
backward run before view 2's, so one view's activations are held at a time; the gradient
is the same sum as the joint one."""

import tensorflow as tf


def train_step(model, data):
    view1, view2, labels = model.make_views(data)
    targets = model.target_forward(view1, view2)
    variables = model.step_variables(labels is not None)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync

    def gradients(v1, v2, labels):
        with tf.GradientTape() as tape:
            loss, logs = model.loss_and_logs(v1, v2, targets, labels)
            # Gradients are summed over replicas: average the loss over the global batch.
            scaled = model.optimizer.scale_loss(loss / replicas)  # (loss scaling: float16)
        return tape.gradient(scaled, variables), logs

    if model.separable_views and model.per_view_gradients:
        grads, logs = gradients(view1, None, labels)
        with tf.control_dependencies([g for g in grads if g is not None]):
            grads2, logs2 = gradients(None, view2, None)
        grads = [a if b is None else b if a is None else a + b for a, b in zip(grads, grads2)]
        logs = {**logs, "loss": logs["loss"] + logs2["loss"]}
    else:
        grads, logs = gradients(view1, view2, labels)
    scalars = model.step_scalars(model.optimizer.iterations)
    learning_rate = model.optimizer.learning_rate
    model.optimizer.apply(grads, variables)
    model.after_update(targets, scalars)
    return model.update_metrics(logs, scalars, learning_rate)


def test_step(model, data):
    view1, view2, labels = model.make_views(data)
    _, logs = model.loss_and_logs(view1, view2, model.target_forward(view1, view2), labels)
    return model.update_metrics(logs, model.step_scalars(model.optimizer.iterations),
                        model.optimizer.learning_rate)
