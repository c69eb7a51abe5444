"""Input pipelines: the bundled CIFAR-10 sample, TFDS datasets, folders of images.

Fixed-size sources (the sample, cifar10, cifar100, stl10) yield uint8 `(images, labels)`
batches and the model draws both views inside its train step. Variable-size sources
(imagenet2012, image folders) cannot be batched before cropping: the random resized crop of
each view runs per image in tf.data, the rest of the augmentation per batch
(`byol_tf.Augmenter`), and they yield `((view1, view2), labels)`.

- `sample`: the bundled sample;  `tfds`: TFDS datasets and their decoded cache;
- `folders`: folders of images;  `arrays`: whole datasets as arrays, for the evaluations;
- `streams`: `pretrain_dataset`, the stream `fit` trains on;
- `sources`: `Source`, a dataset of one of these kinds, decided once.
"""

from byol_tf.data.arrays import check_same_classes, class_names, load_arrays
from byol_tf.data.folders import (IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, DataError, IMAGE_SIGNATURES, bad_images_named,
                                  describe_bad_images, folder_arrays, image_file_problem,
                                  undecodable_images)
from byol_tf.data.sample import SAMPLE_CLASSES, SAMPLE_FILE, load_sample
from byol_tf.data.sources import Source
from byol_tf.data.streams import pretrain_dataset
from byol_tf.data.tfds import (CACHE_ENV, IN_MEMORY_BYTES, TFDS_DATASETS, decoded_split,
                               fits_in_memory)

__all__ = ["check_same_classes", "CACHE_ENV", "DataError", "MAX_IMAGE_PIXELS", "Source", "IMAGE_EXTENSIONS", "IMAGE_SIGNATURES", "IN_MEMORY_BYTES", "SAMPLE_CLASSES",
           "SAMPLE_FILE", "TFDS_DATASETS", "bad_images_named", "class_names", "decoded_split",
           "describe_bad_images", "fits_in_memory", "folder_arrays", "image_file_problem",
           "load_arrays", "load_sample", "pretrain_dataset", "undecodable_images"]
