"""``perceiver predict``: class labels with probabilities, from a trained classifier, for image files or texts."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from perceiver.devices import DEVICE_HELP


def load_image(path: str, image_shape: Tuple[int, int, int]) -> Tuple["numpy.ndarray", str]:  # noqa: F821
    """Read an image file as uint8 (H, W, C) in the model's shape; returns it with a note on what was changed
    (:func:`fit_image`)."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"image file {path!r} does not exist")
    try:
        with Image.open(file) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: not an image file or corrupt ({type(error).__name__})") from None
    return fit_image(image, image_shape)


def fit_image(image: "PIL.Image.Image", image_shape: Tuple[int, int, int]) -> Tuple["numpy.ndarray", str]:  # noqa: F821
    """A PIL image as uint8 (H, W, C) in the model's ``image_shape``; returns it with a note on what was changed.

    Images of another size are resized (bilinear); colour images are converted to grey for one-channel models and
    grey ones to RGB for three-channel models.
    """
    import numpy as np
    from PIL import Image

    height, width, channels = image_shape
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise ValueError(f"the model reads {channels}-channel images; only 1 (grey) and 3 (RGB) can be read from files")
    notes = []
    if image.mode != modes[channels]:
        notes.append(f"converted {image.mode} to {modes[channels]}")
        image = image.convert(modes[channels])
    if image.size != (width, height):
        notes.append(f"resized {image.size[0]}x{image.size[1]} to {width}x{height}")
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return array, ", ".join(notes)


BATCH_SIZE = 64
"""Images read and classified at a time (a directory may hold many)."""


def image_files(inputs: List[str]) -> List[str]:
    """``inputs`` with every directory replaced by the image files in it (not its subdirectories), sorted by name."""
    from PIL import Image

    Image.init()
    readable = {ext for ext, image_format in Image.registered_extensions().items() if image_format in Image.OPEN}
    files = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            files.append(item)
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in readable)
        if not found:
            raise ValueError(f"directory {item} holds no image files (.png, .jpg, ...)")
        files += [str(p) for p in found]
    return files


def predict(
    inputs: List[str] = typer.Argument(
        ..., help="Image files or directories of images (image classifiers), or texts (text classifiers)."
    ),
    model: Path = typer.Option(..., "--model", "-m", help="clf model directory, training output directory or .ckpt."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels to print per input."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("float32", "--dtype", help="Weights in float32, bfloat16 or float16."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: int8 linear layers (CPU)."),
) -> None:
    """Print the most likely labels of each input with their probabilities, one line per input.

    A directory stands for the image files in it, in name order. Images of another size or channel count than the
    model's are resized / converted (a note says so).
    Example: [bold]perceiver predict --model runs/mnist digit.png more_digits/[/]
    """
    import numpy as np
    import torch
    from rich.console import Console
    from rich.markup import escape

    from perceiver.checkpoint import load_model
    from perceiver.compatibility import check_model_reads
    from perceiver.devices import check_device

    if top_k < 1:
        raise typer.BadParameter(f"must be >= 1, got {top_k}", param_hint="--top-k")
    from perceiver import inference

    check_device(device)
    inference.check(dtype, quantize)
    clf = inference.prepare(load_model(model, task="clf", map_location=device), dtype, quantize, device)
    modality = check_model_reads(clf, ("text", "image"), "predict")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    console = Console(highlight=False, soft_wrap=True)
    labels = clf.config.labels()
    k = min(top_k, len(labels))

    def show(items: List[str], probs: "torch.Tensor") -> None:
        for item, row in zip(items, probs):
            values, indices = row.topk(k)
            shown = item if modality == "image" or len(item) <= 60 else item[:57] + "..."
            ranked = ", ".join(f"{escape(labels[i])} ({v:.3f})" for v, i in zip(values.tolist(), indices.tolist()))
            console.print(f"{escape(shown)}: {ranked}")

    if modality == "text":
        from perceiver.tokenizers import model_tokenizer

        model_tokenizer(model, clf, "predict", bytes_only=True)
        show(list(inputs), clf.predict_proba(list(inputs)))
        return
    files = image_files(list(inputs))
    for start in range(0, len(files), BATCH_SIZE):
        batch = files[start:start + BATCH_SIZE]
        images = []
        for path in batch:
            image, note = load_image(path, clf.input_adapter.image_shape)
            if note:
                err.print(f"[yellow]note:[/] {escape(path)}: {note}")
            images.append(image)
        show(batch, clf.predict_proba(torch.from_numpy(np.stack(images))))


def register(app: typer.Typer) -> None:
    app.command("predict", rich_help_panel="Use")(predict)
