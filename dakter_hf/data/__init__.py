"""SAR segmentation datasets as Hugging Face `datasets`: loaders, the raster reader, decoding, export."""

from dakter_hf.utils.lazy import lazy_exports


_EXPORTS = {
    "DataError": "dakter_hf.errors",
    "OSD_CLASSES": "dakter_hf.data.features",
    "SOS_CLASSES": "dakter_hf.data.features",
    "class_names_of": "dakter_hf.data.features",
    "id2label": "dakter_hf.data.features",
    "segmentation_features": "dakter_hf.data.features",
    "load_folder": "dakter_hf.data.folder",
    "load_sos": "dakter_hf.data.sos",
    "load_osd": "dakter_hf.data.osd",
    "patch_origins": "dakter_hf.data.osd",
    "simulate_sar": "dakter_hf.data.simulate",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)  # `datasets` loads on first use
