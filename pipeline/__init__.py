"""affectflow: facial affective-behaviour analysis from video (importable library and Prefect flows)."""

from pipeline.compat import install_torchvision_shim

# Every entry point imports `pipeline` first, so the shim is in place before timm imports torchvision.
install_torchvision_shim()

__version__ = "0.1.0"
