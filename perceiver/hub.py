"""Models on the Hugging Face Hub: a repo id ``org/name`` (or ``org/name@revision``) becomes a directory of the
standard Hub cache, downloaded by ``huggingface_hub`` and usable offline from there (``HF_HUB_OFFLINE=1``).

Tokens come from where ``huggingface_hub`` finds them (``HF_TOKEN``, ``hf auth login``). Every failure is one
:class:`HubError` line that says what to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Tuple, Union

from perceiver.checkpoint import ModelLoadError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
ALLOW_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin", "*.model", "*.txt"]
"""What a model needs: configs, weights, tokenizer files (never other pickles, nor TF/Flax/ONNX copies)."""


class HubError(ModelLoadError):
    """A Hub model that cannot be had, with the reason and the remedy."""


def split_revision(source: str) -> Tuple[str, Optional[str]]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; without ``@`` the revision is None (the default branch)."""
    repo_id, _, revision = source.partition("@")
    return repo_id, revision or None


def is_repo_id(source: Union[str, Path]) -> bool:
    """True for ``org/name[@revision]`` that is not a local path: ``runs/small`` is local when ``runs/`` exists."""
    text = str(source)
    if not REPO_ID.match(text) or Path(text).exists():
        return False
    return not Path(text.split("/", 1)[0]).is_dir()


def download(source: str) -> Path:
    """The local snapshot directory of the Hub model ``source`` (``org/name[@revision]``), downloaded if needed."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = split_revision(source)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except GatedRepoError:
        raise HubError(
            f"Hub model {repo_id} is gated: accept its conditions on {constants.ENDPOINT}/{repo_id}, then log in "
            "(`hf auth login`) or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"Hub model {repo_id} does not exist, or it is private: check the name, or log in (`hf auth login`) "
            "or set HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"Hub model {repo_id} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise HubError(
                f"{source} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is "
                "set: unset it to download the model"
            ) from None
        raise HubError(
            f"cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to download {source}, and it is not in the "
            f"local cache ({constants.HF_HUB_CACHE}): check the network or proxy, or download it where there is one "
            "and copy the cache"
        ) from None
    except HfHubHTTPError as error:
        raise HubError(f"cannot download {source}: {str(error).strip().splitlines()[0]}") from None
