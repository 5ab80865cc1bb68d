"""Named tensors and JSON metadata in one safetensors file: what fine-tuning writes (epoch checkpoints, trained
models). Reading one never unpickles anything: safetensors holds raw tensor bytes and a JSON header only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from hacknip.errors import InputError

META_KEY = "hacknip"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write atomically (a temporary file renamed over ``path``), so that a run killed mid-write leaves the previous
    checkpoint whole."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    contiguous = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    save_file(contiguous, str(partial), metadata={META_KEY: json.dumps(meta, allow_nan=False)})
    os.replace(partial, path)
    return path


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = (handle.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path}: not a readable safetensors file ({str(error).splitlines()[0]}); delete it to start "
                         "that part again") from None
    if header is None:
        raise InputError(f"{path}: a safetensors file without hacknip's metadata; it was not written by hacknip")
    return tensors, json.loads(header)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as named tensors plus its JSON-ready parameter groups (AdamW: step, exp_avg,
    exp_avg_sq per parameter)."""
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{key}": torch.as_tensor(value)
               for index, per_parameter in state["state"].items() for key, value in per_parameter.items()}
    return tensors, {"param_groups": state["param_groups"]}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
