"""Data sets and input pipelines.

* `digits`: the embedded scikit-learn digits, resized to 32x32x3; needs no
  download.
* `cifar`, `imagenet`: TensorFlow Datasets pipelines for CIFAR-10/100 and
  ImageNet-2012, which never download unless asked to.
* `pipeline`: the shared tail of those pipelines (ids, sharding, shuffling,
  preprocessing, batching), for any data set of `{"image", "label"}` dicts.
* `subsets.collect_subsets`: per-class validation and training subsets of
  labelled data, as the EKG and NPPM searches draw them.

Elements are `(image, label)`, or `({"image": image, "id": id}, label)` with
`with_ids=True`, where `id` is the int64 index of the example within its
split.
"""

from ekg_keras.data.digits import DigitsData
from ekg_keras.data.digits import digits
from ekg_keras.data.subsets import SearchData
from ekg_keras.data.subsets import collect_subsets
from ekg_keras.data.tfds_datasets import SplitInfo
from ekg_keras.data.tfds_datasets import cifar
from ekg_keras.data.tfds_datasets import imagenet
from ekg_keras.data.tfds_datasets import load_split_info
from ekg_keras.data.tfds_datasets import pipeline

__all__ = [
    "DigitsData",
    "SearchData",
    "SplitInfo",
    "cifar",
    "collect_subsets",
    "digits",
    "imagenet",
    "load_split_info",
    "pipeline",
]
