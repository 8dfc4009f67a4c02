"""Device names: the one check of a user's ``device=`` argument (below everything using it)."""

from __future__ import annotations

from typing import Any

import torch

from lipbound.errors import InputError


def check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device``; InputError for a name torch does not know or a CUDA
    device this machine does not have."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device {device!r} is not a device name (e.g. 'cpu', 'cuda', "
                         "'cuda:0')") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {device!r}: CUDA is not available on this machine "
                             "(use device='cpu')")
        if dev.index is not None and dev.index >= count:
            raise InputError(f"device {device!r}: this machine has {count} CUDA device(s)")
    return dev
