"""Data modules: byte corpora (``text``), images (``image``), labelled texts (``textclf``)."""

from typing import Any, Dict, Optional


def config_from(config_class: type, config: Optional[Any], overrides: Dict[str, Any]) -> Any:
    """A data module's config: ``config`` as given, or ``config_class(**overrides)``; giving both is an error."""
    if config is None:
        return config_class(**overrides)
    if overrides:
        raise TypeError("give either a config or keyword options, not both")
    return config
