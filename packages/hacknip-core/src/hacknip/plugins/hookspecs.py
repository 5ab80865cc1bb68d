"""The hooks a hacknip plugin can implement.

A plugin is a module, found through the ``hacknip`` entry-point group, holding functions decorated with
``hacknip.hookimpl``. Each hook receives a ``register`` callback: call it once per thing you provide.
Keep plugin modules light: register *specs* (metadata plus a ``"module:callable"`` factory path), so that
``hacknip list`` never imports torch or the backbone's library.

Each plugin's hook runs on its own (see :mod:`hacknip.plugins.registry`): a hook that raises, calls ``sys.exit``, or registers
anything but a spec contributes nothing to that hook, and a name another plugin already registered (compared
case-insensitively; this project's own distributions first, then by distribution name) is ignored, each with a
:class:`hacknip.plugins.manager.PluginWarning` naming the distribution. Names may not contain spaces, ``+`` or ``@``.
"""

import pluggy

hookspec = pluggy.HookspecMarker("hacknip")
hookimpl = pluggy.HookimplMarker("hacknip")


@hookspec
def register_backbones(register):
    """Register backbones: call ``register(BackboneSpec(...))`` once for each."""


@hookspec
def register_heads(register):
    """Register heads (shallow models): call ``register(HeadSpec(...))`` once for each."""


@hookspec
def register_executors(register):
    """Register executors (where featurisation's batches run): call ``register(ExecutorSpec(...))`` once for each."""


@hookspec
def register_descriptors(register):
    """Register descriptors (hand-crafted structure-level featurisers): call ``register(DescriptorSpec(...))`` once
    for each."""
