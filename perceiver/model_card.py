"""The model card (``README.md``) of an export: YAML metadata the Hugging Face Hub reads, then what the project knows
about the model: its task and sizes, its parameter count and, for a model trained by ``perceiver train``, the run's
data set, steps, command and final metrics (from ``run.yaml`` and ``logs/metrics.csv`` of its run directory).

A card written here carries :data:`MARKER`; an export replaces only a ``README.md`` that has it (a card the user
wrote, or edited and removed the marker from, is kept).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

CARD_FILE = "README.md"
MARKER = "<!-- perceiver model card: generated, and replaced by the next export; delete this line to keep edits -->"
LIBRARY_NAME = "perceiver"
DEFAULT_LICENSE = "apache-2.0"

PIPELINE_TAGS = {"clm": "text-generation", "mlm": "fill-mask", "clf": "text-classification"}
"""The Hub's pipeline tag of each task (a classifier that reads images: ``image-classification``)."""
TASK_NAMES = {
    "clm": "Perceiver AR causal language model",
    "mlm": "Perceiver IO masked language model",
    "clf": "Perceiver IO classifier",
}
HUB_DATASETS = {
    "wikitext": "Salesforce/wikitext",
    "wikitext-2": "Salesforce/wikitext",
    "imdb": "stanfordnlp/imdb",
    "mnist": "ylecun/mnist",
}
"""Data sets of ``perceiver train --data NAME`` that are Hub data sets (their ids go into the card's metadata)."""
SIZE_FIELDS = (
    "vocab_size", "max_seq_len", "max_latents", "num_channels", "num_heads", "num_self_attention_layers",
    "num_latents", "num_latent_channels", "num_input_channels", "num_cross_attention_heads",
    "num_self_attention_heads", "num_self_attention_layers_per_block", "num_self_attention_blocks", "image_shape",
    "num_classes",
)
"""Config fields shown as the model's sizes, those the model's config has."""
SKIPPED_METRICS = ("epoch", "step", "tok/s", "items/s")


def is_own_card(path: Union[str, Path]) -> bool:
    """True when ``path`` is a model card this project wrote (and the user did not take over)."""
    try:
        return MARKER in Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def pipeline_tag(model) -> str:
    if model.task == "clf" and getattr(model.config, "adapter", None) == "image":
        return "image-classification"
    return PIPELINE_TAGS.get(model.task, "other")


def find_run(path: Union[str, Path, None]) -> Optional[Path]:
    """The training run directory a resolved model path belongs to (``RUN/model``, ``RUN/checkpoints/x.ckpt`` or
    ``RUN`` itself holding ``run.yaml``), or None."""
    if path is None:
        return None
    path = Path(path)
    candidates = [path]
    if path.name == "model":
        candidates.append(path.parent)
    if path.parent.name == "checkpoints":
        candidates.append(path.parent.parent)
    return next((candidate for candidate in candidates if (candidate / "run.yaml").is_file()), None)


def read_run(run_dir: Path) -> Dict[str, Any]:
    import yaml

    try:
        record = yaml.safe_load((run_dir / "run.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return record if isinstance(record, dict) else {}


def final_metrics(run_dir: Path) -> Dict[str, float]:
    """{metric: its last logged value} from ``logs/metrics.csv`` (learning rates, throughput and counters left
    out)."""
    path = run_dir / "logs" / "metrics.csv"
    last: Dict[str, float] = {}
    try:
        with open(path, newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                for key, value in row.items():
                    if not key or not value or key in SKIPPED_METRICS or key.startswith("lr"):
                        continue
                    try:
                        last[key] = float(value)
                    except ValueError:
                        continue
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return last


def model_card(model, source: Union[str, Path, None] = None, name: Optional[str] = None,
               license: str = DEFAULT_LICENSE, tokenizer: Any = None) -> str:
    """The card of ``model`` (a task model with ``task`` and ``config``). ``source``: the resolved path it was
    loaded from (its run, if any, adds the training facts); ``name``: the title (a repo id or directory name);
    ``tokenizer``: the tokenizer saved with it (None: UTF-8 bytes)."""
    import yaml

    run_dir = find_run(source)
    run = read_run(run_dir) if run_dir else {}
    data = run.get("data") if isinstance(run.get("data"), dict) else {}
    trainer = run.get("trainer") if isinstance(run.get("trainer"), dict) else {}
    dataset = data.get("name")
    config = _config_values(model)
    tags = [LIBRARY_NAME, "perceiver-ar" if model.task == "clm" else "perceiver-io", "pytorch"]
    meta: Dict[str, Any] = {"library_name": LIBRARY_NAME, "license": license, "tags": tags,
                            "pipeline_tag": pipeline_tag(model)}
    if dataset in HUB_DATASETS:
        meta["datasets"] = [HUB_DATASETS[dataset]]
    params = sum(p.numel() for p in model.parameters())
    title = name or f"perceiver {model.task} model"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", MARKER, "", f"# {title}", ""]
    lines += [f"A {TASK_NAMES.get(model.task, model.task + ' model')} (task `{model.task}`, "
              f"{params:,} parameters) of the `perceiver` toolkit, saved as `config.json` + `model.safetensors`.", ""]
    lines += ["## Model", "", "| | |", "|---|---|", f"| task | `{model.task}` ({type(model).__name__}) |",
              f"| parameters | {params:,} ({params / 1e6:.1f}M) |"]
    if config.get("adapter"):
        lines.append(f"| adapter | `{config['adapter']}` |")
    lines += [f"| {key} | {_show(config[key])} |" for key in SIZE_FIELDS if key in config]
    lines.append(f"| tokenizer | {_tokenizer_text(tokenizer, model)} |")
    lines.append("")
    if run:
        lines += _training_section(run, run_dir, data, trainer)
    lines += _use_section(model, name)
    if run:
        lines += ["<details><summary>The run's resolved plan (<code>run.yaml</code>)</summary>", "", "```yaml",
                  yaml.safe_dump(run, sort_keys=False).strip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def card_metadata(text: str) -> Dict[str, Any]:
    """The YAML metadata header of a card (what the Hub reads), parsed."""
    import yaml

    if not text.startswith("---\n"):
        return {}
    header = text[4:].split("\n---\n", 1)[0]
    return yaml.safe_load(header) or {}


def _config_values(model) -> Dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    config = getattr(model, "config", None)
    return asdict(config) if is_dataclass(config) else {}


def _show(value: Any) -> str:
    return "×".join(str(v) for v in value) if isinstance(value, (list, tuple)) else f"{value:,}" \
        if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _tokenizer_text(tokenizer, model) -> str:
    if tokenizer is not None and not type(tokenizer).__name__ == "ByteTokenizer":
        hf = getattr(tokenizer, "hf", None)
        return f"subword, `{type(hf).__name__ if hf is not None else type(tokenizer).__name__}` (files included)"
    if model.task == "clf" and getattr(model.config, "adapter", None) == "image":
        return "none (reads images)"
    return "UTF-8 bytes (no files needed)"


def _training_section(run: Dict[str, Any], run_dir: Path, data: Dict[str, Any], trainer: Dict[str, Any]) -> List[str]:
    dataset = data.get("name", "?")
    where = f" (`{data['data_path']}`)" if data.get("data_path") else ""
    hub = f", Hub data set [{HUB_DATASETS[dataset]}](https://huggingface.co/datasets/{HUB_DATASETS[dataset]})" \
        if dataset in HUB_DATASETS else ""
    lines = ["## Training", "", f"- data set: `{dataset}`{where}{hub}"]
    if trainer.get("max_steps") is not None:
        lines.append(f"- steps: {trainer['max_steps']:,}, batch size {data.get('batch_size', '?')}, "
                     f"precision {trainer.get('precision', '?')}")
    if trainer.get("init_from"):
        lines.append(f"- started from the weights of `{trainer['init_from']}`")
    if trainer.get("lora_r"):
        lines.append(f"- LoRA rank {trainer['lora_r']} on `{trainer.get('lora_targets')}`, merged into the weights")
    lines += ["- command (`run.yaml` is the run's resolved plan, below):", "", "```bash",
              f"perceiver train {run.get('task', '?')} --config run.yaml", "```", ""]
    metrics = final_metrics(run_dir)
    if metrics:
        lines += ["## Results (the last logged value of each metric)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in sorted(metrics.items())]
        lines.append("")
    return lines


def _use_section(model, name: Optional[str]) -> List[str]:
    source = name or "PATH"
    command = {
        "clm": f'perceiver generate --model {source} --prompt "Once upon a time"',
        "mlm": f'perceiver fill-mask --model {source} "The capital of France is [MASK]."',
        "clf": f"perceiver predict --model {source} " + (
            "digit.png" if pipeline_tag(model) == "image-classification" else '"A text to classify"'),
    }.get(model.task)
    lines = ["## Use", "", "```python", "import perceiver", "", f"model = perceiver.load_model({json.dumps(source)})",
             "```", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    return lines


__all__ = ["CARD_FILE", "MARKER", "card_metadata", "find_run", "final_metrics", "is_own_card", "model_card",
           "pipeline_tag"]
