"""convscope's data: bundled and official datasets, image files, batches.

Example::

    ds = load_dataset("digits")                       # bundled: no download
    norm = Normalizer.fit(ds.x_train)                 # store norm.to_dict() with the model
    loader = BatchLoader(ds.x_train, ds.y_train, 64, seed=0, normalizer=norm,
                         augment=Augment(crop_padding=2))
    for xb, yb in loader:                             # xb float32 (64, 1, 28, 28), yb int64
        ...
"""

from __future__ import annotations

from .batches import (TTA, Augment, BatchLoader, Normalizer, horizontal_flip, random_crop, to_float,
                      tta_views)
from .dataset import Dataset, list_datasets, load_dataset, stratified_split
from .formats import (CIFAR10_CLASSES, DataError, RestrictedUnpickler, read_cifar_archive,
                      read_cifar_binary, read_cifar_python, read_idx, restricted_loads)
from .images import IMAGE_EXTENSIONS, load_image, load_image_folder
from .sources import cache_dir, download_file, find_files, search_dirs, sha256_file

__all__ = [
    "Augment", "BatchLoader", "Normalizer", "horizontal_flip", "random_crop", "to_float", "TTA",
    "tta_views",
    "Dataset", "list_datasets", "load_dataset", "stratified_split",
    "CIFAR10_CLASSES", "DataError", "RestrictedUnpickler", "read_cifar_archive",
    "read_cifar_binary", "read_cifar_python", "read_idx", "restricted_loads",
    "IMAGE_EXTENSIONS", "load_image", "load_image_folder",
    "cache_dir", "download_file", "find_files", "search_dirs", "sha256_file",
]
