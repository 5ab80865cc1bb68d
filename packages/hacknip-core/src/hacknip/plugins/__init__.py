"""The plugin API: hooks, plugin discovery, name resolution, the Backbone and Head protocols, feature capture, and
the conformance suite for plugin authors."""
