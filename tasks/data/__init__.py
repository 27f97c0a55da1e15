"""Data loading for every task, in one place.

* :mod:`tasks.data.base`: a LightningDataModule over in-memory train/val/test datasets.
* :mod:`tasks.data.classification`: Fashion-MNIST (Debian's package, read by
  torchvision's loader), MNIST and CIFAR-10 (torchvision, files present or
  ``download=true``), scikit-learn's digits (always present); also the images
  of the generative task.
* :mod:`tasks.data.segmentation`: texture mosaics built from scikit-image's
  textures and photographs (always present), Oxford-IIIT Pet (torchvision).
* :mod:`tasks.data.images` and :mod:`tasks.data.masks`: one photograph (a
  scikit-image name or any file) for Deep Image Prior, its low-resolution
  version and inpainting masks.

A missing dataset is a :class:`DatasetNotFound` error that says how to get it;
nothing silently falls back to another dataset.
"""
from .base import DatasetNotFound, SplitDataModule

__all__ = ["DatasetNotFound", "SplitDataModule"]
