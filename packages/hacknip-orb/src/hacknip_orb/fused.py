"""A faster inference path through orb's GNS that gives the node features of orb's own forward pass (to float32
rounding; ``tests/test_backbone_orb.py`` compares every layer).

Each message-passing step of orb (``AttentionInteractionNetwork``) runs an MLP on every edge whose input is
``[edge, sender node, receiver node]`` (3 x 256 wide). Its first linear layer is a sum of three products, so the sender
and receiver parts are computed once per node and gathered, instead of once per edge (an atom has up to 20 edges):
a third of the edge MLP's multiply-adds. The edge MLP runs over chunks of edges, whose intermediates stay in cache.

Only orb's direct-force regressors without charge/spin conditioning are fused (``fusable``); others run orb's own
forward.
"""

from __future__ import annotations

import torch
from orb_models.forcefield.base import AtomGraphs
from orb_models.forcefield.direct_regressor import DirectForcefieldRegressor
from orb_models.forcefield.gns import AttentionInteractionNetwork, MoleculeGNS
from orb_models.forcefield.nn_util import SSP, get_cutoff
from orb_models.forcefield.segment_ops import segment_sum
from torch import nn

EDGE_CHUNK = 1024
"""Edges per chunk of the edge MLP: its 512-wide intermediates stay in cache (2 MB) instead of streaming through
memory, which made batches of large supercells slower than single ones on 2 cores."""


def fusable(network: nn.Module) -> bool:
    gns = getattr(network, "model", None)
    return (type(network) is DirectForcefieldRegressor and type(gns) is MoleculeGNS and gns.conditioner is None
            and all(_fusable_stack(stack) for stack in gns.gnn_stacks))


def _fusable_stack(stack: nn.Module) -> bool:
    if type(stack) is not AttentionInteractionNetwork or stack._attention_gate != "sigmoid":
        return False
    if stack.conditioning_type != ("none", "none") or not isinstance(stack._edge_mlp.layer_norm, nn.LayerNorm):
        return False
    kinds = [type(module) for module in stack._edge_mlp.mlp]
    hidden_layers = len(kinds) // 2 - 1
    return kinds == [nn.Linear, SSP] * hidden_layers + [nn.Linear, nn.Identity]


class FusedEdgeMLP:
    """``stack._edge_mlp(cat([edges, nodes[senders], nodes[receivers]]))`` without building the concatenation."""

    def __init__(self, stack: AttentionInteractionNetwork) -> None:
        modules = list(stack._edge_mlp.mlp)
        linears, activations = modules[0::2], modules[1:-1:2]
        width = stack.latent_dim
        first = linears[0]
        self.edge_weight = first.weight[:, :width].T.contiguous()
        self.node_weight = torch.cat([first.weight[:, width:2 * width], first.weight[:, 2 * width:]]).T.contiguous()
        self.first_bias = first.bias
        self.hidden_width = first.out_features
        self.later: list[tuple[torch.Tensor, torch.Tensor, SSP]] = [
            (linear.weight.T.contiguous(), linear.bias, activation) for activation, linear in zip(activations, linears[1:])]
        self.layer_norm = stack._edge_mlp.layer_norm

    def __call__(self, edges: torch.Tensor, nodes: torch.Tensor, senders: torch.Tensor,
                 receivers: torch.Tensor) -> torch.Tensor:
        sender_part, receiver_part = (nodes @ self.node_weight).split(self.hidden_width, dim=1)
        out = edges.new_empty((len(edges), self.later[-1][0].shape[1]))
        for start in range(0, len(edges), EDGE_CHUNK):
            chunk = slice(start, start + EDGE_CHUNK)
            hidden = torch.addmm(self.first_bias, edges[chunk], self.edge_weight)
            hidden += sender_part[senders[chunk]]
            hidden += receiver_part[receivers[chunk]]
            for weight, bias, activation in self.later:
                hidden = torch.addmm(bias, activation(hidden), weight)
            out[chunk] = hidden
        return self.layer_norm(out)


def interaction(stack: AttentionInteractionNetwork, edge_mlp: FusedEdgeMLP, nodes: torch.Tensor, edges: torch.Tensor,
                senders: torch.Tensor, receivers: torch.Tensor, cutoff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``AttentionInteractionNetwork.forward`` (sigmoid gate, no conditioning) with the fused edge MLP."""
    receive_attention = torch.sigmoid(stack._receive_attn(edges))
    send_attention = torch.sigmoid(stack._send_attn(edges))
    if stack._distance_cutoff:
        receive_attention = receive_attention * cutoff
        send_attention = send_attention * cutoff
    updated_edges = edge_mlp(edges, nodes, senders, receivers)
    sent = segment_sum(updated_edges * send_attention, senders, nodes.shape[0])
    received = segment_sum(updated_edges * receive_attention, receivers, nodes.shape[0])
    updated_nodes = stack._node_mlp(torch.cat([nodes, received, sent], dim=1))
    return nodes + updated_nodes, edges + updated_edges


class FusedGNS:
    """Node features after orb's encoder (layer 0) and after each ``gnn_stacks[i]`` (layer i + 1), stopping after the
    deepest requested layer. Holds views of the network's weights: build it after the weights are loaded."""

    def __init__(self, network: DirectForcefieldRegressor) -> None:
        self.gns: MoleculeGNS = network.model
        self.edge_mlps = [FusedEdgeMLP(stack) for stack in self.gns.gnn_stacks]

    @torch.no_grad()
    def node_features(self, batch: AtomGraphs, layers: list[int]) -> dict[int, torch.Tensor]:
        gns = self.gns
        nodes, edges = gns._encoder(gns.featurize_nodes(batch), gns.featurize_edges(batch))
        captured = {0: nodes} if 0 in layers else {}
        cutoff = get_cutoff(batch.edge_features["vectors"].norm(dim=-1))
        for layer in range(1, max(layers) + 1):
            stack = gns.gnn_stacks[layer - 1]
            nodes, edges = interaction(stack, self.edge_mlps[layer - 1], nodes, edges, batch.senders, batch.receivers,
                                       cutoff)
            if layer in layers:
                captured[layer] = nodes
        return captured
