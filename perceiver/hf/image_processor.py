"""The image processor of this project's image classifiers, for ``AutoImageProcessor`` and the image-classification
pipeline.

It does what ``perceiver predict`` does to an image file (:func:`perceiver.commands.predict.fit_image`): convert it to
grey or RGB as the model reads, resize it (bilinear) to the model's height and width, and hand it over as
``pixel_values`` (B, C, H, W) in [0, 1]. Normalisation is the model's own (its image adapter holds mean and std).

:func:`image_processor_for` makes the one of a model; :func:`perceiver.hf.auto.save_pipeline_files` saves it beside an
export. krasserm's image classifiers come with a ``preprocessor_config.json`` of type
``PerceiverImageClassifierInputProcessor``; the class of that name reads it (``single_channel``, ``size`` when
``do_resize``; its mean and std are already in the converted model, see :mod:`perceiver.hf.krasserm`).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature


class PerceiverImageProcessor(BaseImageProcessor):
    """Images (PIL, numpy (H, W, C) uint8, or a list of them) -> ``pixel_values`` (B, C, H, W) float32 in [0, 1].

    :param size: ``{"height": H, "width": W}`` of the model (None: keep each image's size)
    :param num_channels: 1 (grey) or 3 (RGB)
    """

    model_input_names = ["pixel_values"]

    def __init__(self, size: Optional[Dict[str, int]] = None, num_channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.size = dict(size) if size else None
        self.num_channels = num_channels

    def preprocess(self, images, return_tensors: Optional[str] = "pt", **kwargs) -> BatchFeature:
        from PIL import Image

        from perceiver.commands.predict import fit_image

        if kwargs:
            raise TypeError(f"{type(self).__name__} does not take {', '.join(sorted(kwargs))}")
        if not isinstance(images, (list, tuple)):
            images = [images]
        arrays = []
        for image in images:
            if not isinstance(image, Image.Image):
                image = Image.fromarray(np.asarray(image, dtype=np.uint8).squeeze())
            shape = (self.size["height"], self.size["width"]) if self.size else (image.height, image.width)
            array, _ = fit_image(image, (*shape, self.num_channels))
            arrays.append(array)
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        return BatchFeature({"pixel_values": pixels}, tensor_type=return_tensors)


class PerceiverImageClassifierInputProcessor(PerceiverImageProcessor):
    """Reads krasserm's ``preprocessor_config.json`` (the class is named by the ``image_processor_type`` it holds):
    grey for ``single_channel``, resized to ``size`` only when ``do_resize``."""

    def __init__(self, single_channel: bool = False, size: Optional[Dict[str, int]] = None, do_resize: bool = True,
                 **kwargs):
        super().__init__(size=size if do_resize else None, num_channels=1 if single_channel else 3, **kwargs)
        self.single_channel = single_channel
        self.do_resize = do_resize



def image_processor_for(model) -> PerceiverImageProcessor:
    """The image processor of a project image classifier (its ``image_shape``)."""
    height, width, channels = model.config.image_shape
    return PerceiverImageProcessor(size={"height": height, "width": width}, num_channels=channels)
