"""Helpers shared by the fairchem 2.x (UMA/eSEN) and 1.x (EquiformerV2) adapters. Imports neither fairchem."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

FORWARD_SEED = 0


@contextlib.contextmanager
def fixed_rng(device: Any) -> Iterator[None]:
    """Run a forward pass with torch's random generator seeded, and the caller's generator state restored after.

    fairchem's eSCN-family networks (UMA, eSEN, EquiformerV2) rotate every edge into a local frame whose roll angle is
    drawn at random in each forward pass, at inference too. The invariant features do not depend on it except for
    float rounding (~1e-7), but equal inputs should give identical features, so each pass uses the same seed.
    """
    import torch

    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(FORWARD_SEED)
        yield


class InputOf:
    """Stands for "the input of ``module``" where :func:`hacknip.plugins.capture.forward_capturing` expects a module whose
    output it hooks: layer 0 of these networks is what enters the first block.

    ``register_forward_hook(hook)`` registers a forward *pre*-hook that calls ``hook(module, args, args[0])``, so the
    capture (and the abort after the deepest layer) happens before the block runs.
    """

    def __init__(self, module: Any) -> None:
        self.module = module

    def register_forward_hook(self, hook):
        def pre_hook(module, args):
            hook(module, args, args[0])

        return self.module.register_forward_pre_hook(pre_hook)


def split_checkpoint(checkpoint: str | Path | None, tasks: Sequence[str]) -> tuple[str | None, str | None]:
    """``"omol"`` -> (None, "omol"); ``"/x/uma.pt:omol"`` -> ("/x/uma.pt", "omol"); ``"/x/uma.pt"`` -> ("/x/uma.pt", None).

    The part after a backbone name's colon is the checkpoint; for UMA it may also name the task, alone or after the
    path, because hacknip's command line passes no other options to a backbone.
    """
    if checkpoint is None:
        return None, None
    text = str(checkpoint)
    if text in tasks and not Path(text).is_file():
        return None, text
    path, sep, task = text.rpartition(":")
    if sep and task in tasks and path and not Path(text).is_file():
        return path, task
    return text, None
