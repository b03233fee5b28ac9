"""``--device`` of the commands that run a model (generate, eval, fill-mask, predict, plugin commands): checked
before anything is loaded, with the devices this machine has in the error."""

from __future__ import annotations

from typing import List

DEVICE_HELP = "Device to run on: cpu, cuda, cuda:1, mps, ... (an unavailable one is refused with the list)."


class DeviceError(ValueError):
    """A device this machine does not have."""


def available_devices() -> List[str]:
    """Names of the devices torch can use here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        names += [f"xpu:{index}" for index in range(xpu.device_count())]
    return names


def check_device(name: str) -> str:
    """``name`` if it is a device this machine has (``cuda`` means ``cuda:0``); otherwise a :class:`DeviceError`
    that lists the devices it has."""
    import torch

    available = available_devices()
    listing = f"devices on this machine: {', '.join(available)}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"unknown device {name!r}; {listing}") from None
    wanted = device.type if device.type in ("cpu", "mps") else f"{device.type}:{device.index or 0}"
    if wanted not in available:
        raise DeviceError(f"device {name!r} is not available; {listing}")
    return name
