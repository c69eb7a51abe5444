"""A run's config from train.py's arguments, resolved as train.py resolves them (in-process:
its flags, the names given, `byol_tf.training.config.resolve`)."""


def resolve_args(*args, host=None, **kwargs):
    """(RunConfig, notes) of `train.py args…` on `host` (default: `Host()`); keyword arguments
    go to `config.resolve` (previous, budget, …)."""
    from absl import flags

    import byol_tf.cli.train as train_cli
    from byol_tf.training import config

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", *args])
    given = {f.name for f in flags.FLAGS.get_flags_for_module(train_cli.__name__) if f.present}
    return config.resolve(flags.FLAGS, given, host or config.Host(), **kwargs)
