"""The application: what `train.py` runs, apart from the library it trains with.

- `config`: a run's config (the dataset's recipe from `presets`, overridden by the flags);
- `build`: its model, optimizer and `tf.distribute` strategy;
- `run_folder`, `checkpoints`: what a run writes, and how it resumes;
- `trainer`: the phases (train → save → evaluate → export → publish), on either backend;
- `publish`: zoo entries from an encoder and its results; `pictures`: curves and neighbours.

Nothing in the library (`byol_tf` outside this package) imports from here.
"""
