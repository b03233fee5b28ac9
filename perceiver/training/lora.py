"""LoRA fine-tuning through PEFT: ``perceiver train TASK --init-from SOURCE --lora-r 8``.

Only the low-rank matrices train; the run's export ``RUN/model/`` holds only them (``adapter_model.safetensors`` +
``adapter_config.json``, whose ``base_model_name_or_path`` names the source) and the source's tokenizer.
:func:`load_lora` gives the base model with the adapter merged in: a plain model of the task, which
``perceiver.checkpoint.load_model`` returns for such a directory, and ``perceiver export RUN --merge`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
TARGET_ALIASES: Dict[str, List[str]] = {
    "q": ["q_proj"], "k": ["k_proj"], "v": ["v_proj"], "o": ["o_proj"], "mlp": ["fc1", "fc2"],
}
"""``--lora-targets`` names -> the linear layers they mean in every attention layer (a layer's own name, such as
``q_proj``, works too)."""


class LoraError(ValueError):
    """LoRA options that do not fit the model, or PEFT missing."""


def is_lora_dir(directory: Union[str, Path]) -> bool:
    return (Path(directory) / ADAPTER_CONFIG).is_file()


def _peft():
    try:
        import peft
    except ImportError:
        raise LoraError("LoRA needs the peft package: pip install 'perceiver[lora]'") from None
    return peft


def target_modules(model: nn.Module, targets: str) -> List[str]:
    """The linear layer names (last component) of ``targets`` (``"q,k,v,o,mlp"``); a name the model has no linear
    layer for is a :class:`LoraError` that lists what it has."""
    have = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})
    names = [part.strip() for part in targets.split(",") if part.strip()]
    if not names:
        raise LoraError("--lora-targets names no module")
    out: List[str] = []
    for name in names:
        for module in TARGET_ALIASES.get(name, [name]):
            if module not in have:
                raise LoraError(f"--lora-targets {name!r}: the model has no {module!r} layer (it has "
                                f"{', '.join(have)}; aliases {', '.join(TARGET_ALIASES)})")
            out.append(module)
    return sorted(set(out))


def lora_config(model: nn.Module, r: int, alpha: float, targets: str):
    return _peft().LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules(model, targets))


def check_lora(task: str, model_config: Any, trainer_config: Any) -> None:
    """Before anything is written: PEFT is installed, the run starts from a model, and the targets exist (on a model
    built on the meta device)."""
    import torch

    from perceiver import registry

    if not trainer_config.init_from:
        raise LoraError("--lora-r trains low-rank adapters of a loaded model: give --init-from SOURCE")
    _peft()
    with torch.device("meta"):
        model = registry.get("task", task).load()(model_config)
    target_modules(model, trainer_config.lora_targets)


def wrap(model: nn.Module, trainer_config: Any) -> nn.Module:
    """``model`` with LoRA layers on the targets (PEFT's ``PeftModel``); only they train."""
    source = trainer_config.init_from
    base = str(Path(source).resolve()) if Path(source).exists() else source
    config = lora_config(model, trainer_config.lora_r, trainer_config.lora_alpha, trainer_config.lora_targets)
    model.name_or_path = base  # what PEFT records as the base (base_model_name_or_path in adapter_config.json)
    return _peft().get_peft_model(model, config)


def save_adapter(peft_model: nn.Module, directory: Union[str, Path], tokenizer: Any = None) -> Path:
    """Write the adapter (and the files of a subword ``tokenizer``) into ``directory``, replacing an earlier
    adapter export there."""
    from perceiver.files import follow_umask, replace_directory
    from perceiver.tokenizers import TOKENIZER_FILES, save_tokenizer

    directory = Path(directory)

    def write(tmp: Path) -> None:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)  # PEFT's card template, with nothing filled in
        follow_umask(tmp / ADAPTER_WEIGHTS)
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)

    own = [name for name in (*ADAPTER_FILES, *TOKENIZER_FILES) if (directory / name).exists()]
    return replace_directory(directory, write, own=own if is_lora_dir(directory) else [], overwrite=True)


def load_lora(directory: Union[str, Path], task: Optional[str] = None) -> nn.Module:
    """The base model named by ``directory``'s ``adapter_config.json`` with the adapter merged in (a plain model)."""
    import json

    from perceiver.checkpoint import ModelLoadError, load_model

    directory = Path(directory)
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
        base = config["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"cannot read {directory / ADAPTER_CONFIG}: {error}") from None
    if not base:
        raise ModelLoadError(f"{directory / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    try:
        peft = _peft()
    except LoraError as error:
        raise ModelLoadError(f"{directory} is a LoRA adapter: {error}") from None
    model = load_model(base, task=task)
    try:
        adapted = peft.PeftModel.from_pretrained(model, str(directory))
    except Exception as error:  # PEFT raises many kinds for adapters that do not fit their base
        raise ModelLoadError(f"the LoRA adapter in {directory} does not fit its base {base}: {error}") from None
    return adapted.merge_and_unload()
