"""Collect the outputs of several layers from one forward pass, and stop as soon as the deepest is reached.

Backbone plugins use this instead of re-running a network once per layer: forward hooks copy each requested
module's output, and the hook on the deepest requested layer aborts the pass, so nothing past it is computed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class _ReachedDeepestLayer(Exception):
    pass


def forward_capturing(
    run: Callable[[], Any],
    modules: Mapping[int, Any],
    layers: Sequence[int],
    extract: Callable[[int, Any], Any] = lambda layer, output: output,
    detach: bool = True,
) -> dict[int, Any]:
    """Call ``run()`` (which runs the network forward) with hooks on ``modules[layer]`` for each requested layer.

    ``extract(layer, output)`` turns a module output into the per-atom tensor to keep (e.g. the scalar part).
    Returns ``{layer: tensor}``, detached unless ``detach=False`` (fine-tuning: the captured tensors keep the graph
    of the aborted pass, so gradients flow back through every module that ran). Each hooked module must run exactly
    once per forward pass. Passes in other threads through the same modules are not captured (hooks are per module, not per call).
    """
    wanted = sorted(set(layers))
    deepest = wanted[-1]
    captured: dict[int, Any] = {}
    handles = []

    caller = threading.get_ident()

    def make_hook(layer: int):
        def hook(module, inputs, output):
            if threading.get_ident() != caller:
                return None
            kept = extract(layer, output)
            captured[layer] = kept.detach() if detach else kept
            if layer == deepest:
                raise _ReachedDeepestLayer

        return hook

    try:
        for layer in wanted:
            handles.append(modules[layer].register_forward_hook(make_hook(layer)))
        try:
            run()
        except _ReachedDeepestLayer:
            pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [layer for layer in wanted if layer not in captured]
    if missing:
        raise RuntimeError(f"layers {missing} were not reached by the forward pass")
    return captured


def scalar_channels(irreps: Any) -> Any:
    """Columns of an e3nn feature laid out as ``irreps`` that hold invariant scalars (0e): a ``slice`` when they
    are contiguous, else a ``torch`` index tensor. For equivariant backbones built on e3nn (imported here only)."""
    import torch
    from e3nn.o3 import Irreps

    irreps = Irreps(irreps)
    columns = [column
               for (_, irrep), span in zip(irreps, irreps.slices())
               if irrep.l == 0 and irrep.p == 1
               for column in range(span.start, span.stop)]
    if not columns:
        raise ValueError(f"irreps {irreps} have no scalar (0e) channels")
    if columns == list(range(columns[0], columns[-1] + 1)):
        return slice(columns[0], columns[-1] + 1)
    return torch.tensor(columns)
