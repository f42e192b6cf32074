"""SAR segmentation datasets as Hugging Face `datasets`."""

from .build import DataError
from .features import OSD_CLASSES, SOS_CLASSES, class_names_of, id2label, segmentation_features
from .folder import load_folder
from .osd import load_osd, patch_origins
from .simulate import simulate_sar
from .sos import load_sos

__all__ = [
    "DataError",
    "OSD_CLASSES",
    "SOS_CLASSES",
    "class_names_of",
    "id2label",
    "segmentation_features",
    "load_folder",
    "load_sos",
    "load_osd",
    "patch_origins",
    "simulate_sar",
]
