"""DAKTer Gradio Space: generate SAR images with soft labels, segment your own SAR image.

    python spaces/app.py                                   # committed default models (synthetic data)
    python spaces/app.py --pipeline DIR_OR_HUB_ID --students DIR1,DIR2 --port 7860
    DAKTER_PIPELINE=... DAKTER_STUDENTS=... python app.py  # as a Hugging Face Space

UI entry only: the tabs, their callbacks, model loading and all computation live in
`dakter_hf.space` (installed from requirements.txt), so the Space and `dakter space`
run the same code. Default models are the folders under ./models next to this file.
"""

import os
import sys

from dakter_hf.space.launch import main


if __name__ == "__main__":
    sys.exit(main(models_root=os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")))
