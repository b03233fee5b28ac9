"""Publishing models on the Hugging Face Hub: ``perceiver push`` and the task models' ``save_pretrained`` /
``push_to_hub`` / ``from_pretrained``.

What is uploaded is an export of this project (:func:`perceiver.checkpoint.save_model`: ``config.json``,
``model.safetensors``, the tokenizer's files if the model has a subword tokenizer) with a generated model card
``README.md`` (:mod:`perceiver.model_card`), written to a temporary directory first. A repo id is what
:func:`perceiver.checkpoint.load_model` reads back. ``from_pretrained`` is ``load_model`` with the class's task, so Hub
ids, exports, training runs, ``.ckpt`` files and krasserm's directories all load through the one path.

The three methods are written here rather than taken from ``huggingface_hub.ModelHubMixin``: its ``save_pretrained``
deletes any ``config.json`` in the target and writes its own, and its ``from_pretrained`` downloads and decodes the
config by itself; this project's export format, no-overwrite rules and loading checks would each need overriding.

Every failure is a :class:`PushError` (one line that says what to do): no token, a repo the token may not write to,
the Hub unreachable or ``HF_HUB_OFFLINE`` set.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from perceiver.model_card import DEFAULT_LICENSE

TOKEN_HINT = "set HF_TOKEN, run `hf auth login`, or pass --token (token= in Python)"


class PushError(ValueError):
    """A model that cannot be pushed to the Hub, with the reason and the remedy."""


class HubMethods:
    """``save_pretrained``, ``push_to_hub`` and ``from_pretrained`` for a task model (which has ``task`` and
    ``config``)."""

    def save_pretrained(self, save_directory: Union[str, Path], overwrite: bool = False, tokenizer: Any = None,
                        license: str = DEFAULT_LICENSE) -> Path:
        """Export the model to ``save_directory`` (:func:`perceiver.checkpoint.save_model`, with its rules: a new or
        empty directory unless ``overwrite``; files perceiver did not write are never replaced) with a model card.
        ``tokenizer``: a subword tokenizer to save with it (None: the model reads bytes)."""
        from perceiver.checkpoint import save_model
        from perceiver.model_card import model_card

        card = model_card(self, name=Path(save_directory).name, license=license, tokenizer=tokenizer)
        return save_model(self, save_directory, overwrite=overwrite, tokenizer=tokenizer, card=card)

    def push_to_hub(self, repo_id: str, private: bool = False, revision: Optional[str] = None,
                    token: Optional[str] = None, tokenizer: Any = None, license: str = DEFAULT_LICENSE,
                    commit_message: Optional[str] = None) -> str:
        """Upload the model (an export with a model card) to the Hub repo ``repo_id``, created if needed; returns
        the commit's URL. ``revision``: a branch (created from the default branch if it does not exist)."""
        return push_model(self, repo_id, private=private, revision=revision, token=token, tokenizer=tokenizer,
                          license=license, commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, source: Union[str, Path], dtype=None, device: Optional[str] = None):
        """The model in ``source`` (a Hub repo id ``org/name[@revision]``, an export, a training run, a ``.ckpt``
        file or a krasserm directory), in eval mode; it must be a model of this class's task."""
        from perceiver.checkpoint import ModelLoadError, load_model

        model = load_model(source, task=cls.task, dtype=dtype, device=device)
        if not isinstance(model, cls):
            raise ModelLoadError(f"{source} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def check_repo_id(repo_id: str) -> str:
    from perceiver.hub import REPO_ID

    if not isinstance(repo_id, str) or "@" in repo_id or not REPO_ID.match(repo_id):
        raise PushError(f"{repo_id!r} is not a Hub repo id: write it as ORG/NAME (branches go in --revision)")
    return repo_id


def find_token(token: Optional[str] = None) -> str:
    """``token``, else the one ``huggingface_hub`` finds (``HF_TOKEN``, ``hf auth login``); none is a PushError,
    and so is ``HF_HUB_OFFLINE`` (both are said before anything slow)."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PushError("cannot push with HF_HUB_OFFLINE set: unset it to reach the Hugging Face Hub")
    if token:
        return token

    found = get_token()
    if not found:
        raise PushError(f"pushing to the Hugging Face Hub needs a token with write access: {TOKEN_HINT}")
    return found


def push_model(model, repo_id: str, private: bool = False, revision: Optional[str] = None,
               token: Optional[str] = None, tokenizer: Any = None, license: str = DEFAULT_LICENSE,
               commit_message: Optional[str] = None, source: Union[str, Path, None] = None,
               readme: Optional[Path] = None) -> str:
    """Write ``model`` as an export with a model card into a temporary directory and upload it to ``repo_id``;
    returns the commit's URL. ``source``: the resolved path it was loaded from (its training run fills the card);
    ``readme``: a ``README.md`` of the user's to upload instead of the generated card."""
    from perceiver.checkpoint import save_model
    from perceiver.model_card import CARD_FILE, model_card

    check_repo_id(repo_id)
    token = find_token(token)
    with tempfile.TemporaryDirectory(prefix="perceiver-push-") as tmp:
        folder = Path(tmp) / "export"
        card = None if readme else model_card(model, source=source, name=repo_id, license=license,
                                              tokenizer=tokenizer)
        save_model(model, folder, tokenizer=tokenizer, card=card)
        if readme:
            (folder / CARD_FILE).write_bytes(readme.read_bytes())
        return upload(folder, repo_id, private=private, revision=revision, token=token,
                      commit_message=commit_message or f"Upload {model.task} model with perceiver")


def upload(folder: Path, repo_id: str, private: bool, revision: Optional[str], token: str,
           commit_message: str) -> str:
    """Create ``repo_id`` if needed (and the branch ``revision``) and upload ``folder`` in one commit."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                                 commit_message=commit_message)
    except Exception as error:  # noqa: BLE001 - network and HTTP errors of several libraries, each one line
        raise PushError(_reason(error, repo_id)) from None
    return str(getattr(info, "commit_url", info))


def _reason(error: Exception, repo_id: str) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return f"cannot push {repo_id}: HF_HUB_OFFLINE is set; unset it to reach the Hugging Face Hub"
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            return f"the Hugging Face Hub refused the token (401): {TOKEN_HINT} with a valid token"
        if status == 403:
            return (f"the token may not write to {repo_id} (403): use a token with write access to that namespace, "
                    "or push to your own ORG/NAME")
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"cannot push {repo_id}: {first}"
    if any(cls.__name__ in ("TransportError", "ConnectionError") for cls in type(error).__mro__):
        return (f"cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to push {repo_id}: check the network or "
                "proxy (HTTPS_PROXY)")
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot push {repo_id}: {type(error).__name__}: {first}"


__all__ = ["HubMethods", "PushError", "check_repo_id", "find_token", "push_model", "upload"]
