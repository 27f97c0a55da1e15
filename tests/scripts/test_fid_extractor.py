"""scripts/fid_extractor.py: the extractor a generative run uses, scored on the dataset's whole test set."""
import pytest
import torch

from xconv_harness import fid
from xconv_harness.studies import fid_extractor


def test_the_runs_extractor_on_the_whole_test_set(tmp_path):
    overrides = ("data.dataset=digits", f"task.fid_cache_dir={tmp_path}", "task.fid_epochs=2")
    result = fid_extractor.main(["--experiment", "cpu_ddpm_mnist", *overrides])
    assert result["dataset"] == "digits" and result["fid_seed"] == 0 and result["fid_epochs"] == 2
    assert result["images"] == 360 and result["accuracy"] > 0.8  # scikit-learn digits' test split
    cached = list(tmp_path.glob("*.pt"))
    assert len(cached) == 1  # trained once, as a run would, and cached where a run looks
    again = fid_extractor.extractor_accuracy("cpu_ddpm_mnist", overrides)
    assert again == result and list(tmp_path.glob("*.pt")) == cached  # loaded from the cache
    # the per-run metric's function, in chunks of 7 (not a multiple of the 360 images): the same figure
    from xconv_harness.config_files import compose_experiment
    from xconv_harness.run import build

    datamodule, _, _ = build(compose_experiment("cpu_ddpm_mnist", overrides))
    images, labels = datamodule.extractor_test_data()
    net = fid.load_or_train(cached[0], None, in_channels=1, image_size=images.shape[-1])
    assert fid.extractor_accuracy(net, images, labels, chunk=7) == pytest.approx(result["accuracy"], abs=1e-6)
    assert images.min() >= 0 and images.max() <= 1 and images.dtype == torch.float32


def test_a_table_without_an_extractor_is_refused():
    with pytest.raises(ValueError, match="--experiment=table1_mnist: task=classification, not generative"):
        fid_extractor.extractor_accuracy("table1_mnist")
