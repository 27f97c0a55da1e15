"""Data loading for every task, in one place.

* :mod:`xconv_harness.data.base`: a LightningDataModule over in-memory train/val/test datasets.
* :mod:`xconv_harness.data.classification`: Fashion-MNIST (Debian's package, read by
  torchvision's loader), MNIST and CIFAR-10 (torchvision, files present or
  ``download=true``), scikit-learn's digits (always present); also the images
  of the generative task.
* :mod:`xconv_harness.data.segmentation`: texture mosaics built from scikit-image's
  textures and photographs (always present), Oxford-IIIT Pet (torchvision).
* :mod:`xconv_harness.data.photos` and :mod:`xconv_harness.data.masks`: one photograph (a
  scikit-image name or any file) for Deep Image Prior, its low-resolution
  version and inpainting masks.

A missing dataset is a :class:`DatasetNotFound` error that says how to get it;
nothing silently falls back to another dataset.
"""
from .base import DatasetNotFound, SplitDataModule

__all__ = ["DatasetNotFound", "SplitDataModule"]
