"""The optional extension of the backbone protocol that fine-tuning needs: a network that gives per-atom features of
one layer *with gradients*, and says which of its parameters belong to which part of the network.

A backbone supports fine-tuning when it has a method ``trainable(layer)`` returning a :class:`TrainableNetwork`
(and its spec sets ``BackboneSpec.trainable = True``, so that ``hacknip list`` can say so without importing it).
The network is a ``torch.nn.Module`` truncated after ``layer``: nothing past it runs, so the parameters past it
receive no gradient and belong to the group :data:`PAST_LAYER`.

Group names are the plugin's, in network order; these names have a meaning shared by every backbone:

- :data:`EMBEDDING`: the first part of the network (element embedding, edge/basis encoders): frozen by default;
- :data:`INTERACTIONS`: the message-passing blocks up to and including ``layer``: trained by default;
- :data:`PAST_LAYER`: everything after ``layer`` (later blocks, the readout / decoder): never reached, so frozen.

Every parameter of the module is in exactly one group, and after a backward pass exactly the parameters of
unfrozen groups have gradients (:class:`hacknip.plugins.testing.TrainableConformance` checks both). A parameter the
library itself keeps fixed (``requires_grad`` False when hacknip first sees it, e.g. SevenNet's neighbour-count
normaliser) stays fixed whatever its group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from hacknip.errors import InputError

if TYPE_CHECKING:
    import torch
    from ase import Atoms

EMBEDDING = "embedding"
INTERACTIONS = "interactions"
PAST_LAYER = "past_layer"
FROZEN_BY_DEFAULT = (EMBEDDING, PAST_LAYER)
"""The paper's recipe: the embedding/encoder and the readout/decoder stay as pretrained; the rest is trained."""


@runtime_checkable
class TrainableNetwork(Protocol):
    """A ``torch.nn.Module``: a backbone network truncated after ``layer``, whose output keeps its gradients."""

    layer: int
    width: int
    """Width of the per-atom features ``forward`` returns (the backbone's ``layer_widths[layer]``)."""
    supports_mixed_precision: bool
    """True when the forward pass may run under ``torch.autocast`` on a GPU."""

    def inputs(self, structures: Sequence[Atoms]) -> list[Any]:
        """One network input per structure (a graph), built once and reused every epoch. Runs on the CPU; raises
        :class:`hacknip.errors.BadStructureError` for a structure the backbone cannot featurise."""

    def forward(self, inputs: Sequence[Any]) -> list[torch.Tensor]:
        """Per-atom features of ``layer`` for each input, each of shape ``(n_atoms_i, width)``, with gradients. Atoms
        are those of the structure given to :meth:`inputs` (not of a supercell); inputs may be moved to the module's
        device here."""

    def parameter_groups(self) -> dict[str, list[str]]:
        """Names (as in ``named_parameters()``) of the parameters of each group, groups in network order."""


def groups_by_module(parameter_names: Sequence[str], embedding: Sequence[str], interactions: Sequence[str],
                     root: str = "network.") -> dict[str, list[str]]:
    """Groups from module paths (relative to ``root``): a parameter lying in one of the ``embedding`` modules is in
    ``embedding``, else one lying in an ``interactions`` module in ``interactions``, else (also anything outside
    ``root``) in ``past_layer``. What a plugin's ``parameter_groups`` returns once it knows which modules reach the
    layer."""
    def lies_in(name: str, modules: Sequence[str]) -> bool:
        return name.startswith(root) and any(name[len(root):].startswith(module + ".") for module in modules)

    groups: dict[str, list[str]] = {EMBEDDING: [], INTERACTIONS: [], PAST_LAYER: []}
    for name in parameter_names:
        group = EMBEDDING if lies_in(name, embedding) else INTERACTIONS if lies_in(name, interactions) else PAST_LAYER
        groups[group].append(name)
    return groups


def is_trainable(backbone: Any) -> bool:
    return callable(getattr(backbone, "trainable", None))


def trainable_network(backbone: Any, layer: int) -> TrainableNetwork:
    """``backbone.trainable(layer)``, or an :class:`~hacknip.errors.InputError` saying the backbone cannot be
    fine-tuned or has no such layer."""
    if not is_trainable(backbone):
        raise InputError(f"{backbone.name} cannot be fine-tuned: its plugin gives no trainable network "
                         "(`hacknip list` shows which backbones can)")
    n_layers = len(backbone.layer_widths)
    if not 0 <= layer < n_layers:
        raise InputError(f"{backbone.name} has layers 0..{n_layers - 1}; asked to fine-tune up to layer {layer}")
    return backbone.trainable(layer)


def check_groups(network: Any, frozen: Sequence[str]) -> dict[str, list[str]]:
    """The network's groups, after checking that every parameter is in exactly one of them and that each name in
    ``frozen`` is a group."""
    groups = network.parameter_groups()
    unknown = [name for name in frozen if name not in groups]
    if unknown:
        raise InputError(f"no parameter group {', '.join(map(repr, unknown))}: this network's groups are "
                         f"{', '.join(groups)}")
    named = [name for name, _ in network.named_parameters()]
    listed = [name for names in groups.values() for name in names]
    if sorted(listed) != sorted(named):
        missing = sorted(set(named) - set(listed))
        repeated = sorted({name for name in listed if listed.count(name) > 1})
        extra = sorted(set(listed) - set(named))
        raise ValueError(f"parameter groups of layer {network.layer} do not partition the parameters: "
                         f"missing {missing[:5]}, repeated {repeated[:5]}, unknown {extra[:5]}")
    return groups


FIXED_BY_LIBRARY = "hacknip_fixed_by_library"
"""Attribute hacknip sets on each parameter the first time it freezes a network: whether the library built it fixed."""


def fixed_by_library(parameter: Any) -> bool:
    if not hasattr(parameter, FIXED_BY_LIBRARY):
        setattr(parameter, FIXED_BY_LIBRARY, not parameter.requires_grad)
    return getattr(parameter, FIXED_BY_LIBRARY)


def freeze(network: Any, frozen: Sequence[str]) -> dict[str, list[str]]:
    """Set ``requires_grad`` of each parameter: False in the ``frozen`` groups and for parameters the library keeps
    fixed, True elsewhere. Returns the groups."""
    groups = check_groups(network, frozen)
    frozen_names = {name for group in frozen for name in groups[group]}
    for name, parameter in network.named_parameters():
        fixed = fixed_by_library(parameter)  # recorded before anything here changes requires_grad
        parameter.requires_grad_(name not in frozen_names and not fixed)
    return groups
