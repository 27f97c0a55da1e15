"""``import xconv`` needs torch only."""
import subprocess
import sys


def test_import_xconv_loads_no_harness_dependency():
    code = ("import sys, xconv; "
            "heavy = [m for m in ('lightning', 'pytorch_lightning', 'hydra', 'wandb', 'torchvision', "
            "'segmentation_models_pytorch', 'torchmetrics', 'skimage', 'sklearn') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
