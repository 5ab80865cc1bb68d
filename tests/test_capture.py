"""forward_capturing: several layers from one pass, and passes in other threads left alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hacknip.plugins.capture import forward_capturing

torch = pytest.importorskip("torch")


def _network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Tanh())


def _layer_outputs(network, x):
    outputs, value = {}, x
    for index, module in enumerate(network):
        value = module(value)
        outputs[index] = value
    return outputs


def test_captures_every_requested_layer_and_stops_at_the_deepest():
    network, x = _network(), torch.randn(7, 3)
    ran = []
    network[3].register_forward_hook(lambda *_: ran.append(3))
    captured = forward_capturing(lambda: network(x), dict(enumerate(network)), [0, 2])
    assert sorted(captured) == [0, 2] and ran == []
    expected = _layer_outputs(network, x)
    for layer in (0, 2):
        torch.testing.assert_close(captured[layer], expected[layer])


def test_passes_in_other_threads_through_the_same_modules_are_not_captured():
    network = _network()
    inputs = [torch.randn(6, 3), torch.randn(9, 3)]
    both_hooked = threading.Barrier(2)  # each thread's hooks are on the modules before either pass runs

    def capture(x):
        def run():
            both_hooked.wait(timeout=10)
            return network(x)
        return forward_capturing(run, dict(enumerate(network)), [1, 3])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(capture, inputs))
    for x, captured in zip(inputs, results):
        expected = _layer_outputs(network, x)
        for layer in (1, 3):
            torch.testing.assert_close(captured[layer], expected[layer])
