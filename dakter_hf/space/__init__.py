"""The Gradio Space: generate SAR images with soft labels, segment uploaded scenes.

    spaces/app.py / `dakter space` -> launch.main -> models (which weights) -> ui.build_demo
    ui.build_demo wires generate_tab / segment_tab (pure functions), scene_io (upload
    reading, GeoTIFF writing), figures (pictures) and about (text) into gr.Blocks;
    options holds the settings and limits.

Nothing is imported here, so `options` loads without Gradio or torch.
"""
