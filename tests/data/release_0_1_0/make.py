"""Writes the files of byol_tf 0.1.0 that later releases must still load.

run/ (config.json, checkpoints/, history.csv) is a run folder of 0.1.0's train.py stopped after
its first epoch: `python train.py --epochs=2 --steps_per_epoch=2 --batch_size=16
--hidden_dim=16 --projection_dim=8 --noknn --run_dir=RUN --time_limit_minutes=0.01`."""
import sys, pathlib, json
sys.path.insert(0, "tests")
import byol_tf
import numpy as np, tensorflow as tf, keras
from byol_tf import data
from byol_tf.checkpoints import CheckpointManager  # (0.1.0; now byol_tf.training.checkpoints)
from helpers.models import tiny_byol

out = pathlib.Path(sys.argv[1])
x = data.load_sample()["x_test"][:16]
y = np.arange(16) % 10
model = tiny_byol(num_classes=10)
model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), verbose=0)
model.save(out / "byol.keras")
model.image_encoder().save(out / "encoder.keras")
CheckpointManager(out / "checkpoints").save(model, 2, {"history": [{"loss": 1.0}]})
emb = np.asarray(model(x[:4]))
target = [np.asarray(v) for v in model.target_encoder.weights[:2]]
np.savez(out / "expected.npz", images=x[:4], embeddings=emb, target0=target[0],
         seed_state=np.asarray(model.seed_generator.state.numpy()),
         iterations=int(model.optimizer.iterations.numpy()))
print(model.optimizer.iterations.numpy(), emb.shape)
