"""The plugin registry: entry-point discovery, each hook, lazy loading, and plugin selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hacknip import hookimpl
from hacknip.plugins.backbone import BackboneSpec
from hacknip.plugins.head import HeadSpec
from hacknip.plugins.manager import PluginWarning, pm
from hacknip.plugins.registry import UnknownNameError, backbone_specs, create_head, head_specs, resolve_backbone


class ThrowawayPlugin:
    @hookimpl
    def register_backbones(self, register):
        register(BackboneSpec(name="throwaway", factory="toy_backbone:load", cutoff=3.5, layer_widths=(4, 6, 6),
                              needs_supercell=True, library="toy"))

    @hookimpl
    def register_heads(self, register):
        register(HeadSpec(name="throwaway-ridge", factory="sklearn.linear_model:Ridge",
                          task_kinds=frozenset({"regression"})))


@pytest.fixture
def throwaway():
    pm.register(ThrowawayPlugin(), name="throwaway")
    yield
    pm.unregister(name="throwaway")


def test_register_backbones_hook(throwaway):
    spec = backbone_specs()["throwaway"]
    assert spec.cutoff == 3.5 and spec.layer_widths == (4, 6, 6) and spec.needs_supercell
    backbone = spec.load()
    assert backbone.name == "toy" and backbone.checkpoint is None


def test_register_heads_hook(throwaway):
    spec = head_specs()["throwaway-ridge"]
    assert spec.task_kinds == {"regression"}
    assert create_head("throwaway-ridge", alpha=2.0).get_params()["alpha"] == 2.0


def test_unregister_removes_everything(throwaway):
    pm.unregister(name="throwaway")
    try:
        assert "throwaway" not in backbone_specs()
        assert "throwaway-ridge" not in head_specs()
    finally:
        pm.register(ThrowawayPlugin(), name="throwaway")


def test_checkpoint_suffix_selects_base_spec(throwaway):
    spec, checkpoint = resolve_backbone("throwaway:/models/my.pt")
    assert spec.name == "throwaway" and checkpoint == "/models/my.pt"


def test_unknown_backbone_suggests_close_names(throwaway):
    with pytest.raises(UnknownNameError, match="Did you mean throwaway"):
        resolve_backbone("throwawy")


def test_duplicate_registration_is_skipped_with_a_warning(throwaway):
    """Not an error any more (one plugin must not break every command): the later plugin's name is ignored."""
    pm.register(ThrowawayPlugin(), name="throwaway-twin")
    try:
        with pytest.warns(PluginWarning, match="plugin 'throwaway-twin'.*registers the backbone 'throwaway'.*ignored"):
            assert "throwaway" in backbone_specs()
    finally:
        pm.unregister(name="throwaway-twin")


def test_registering_the_wrong_type_is_skipped_with_a_warning():
    class Wrong:
        @hookimpl
        def register_backbones(self, register):
            register({"name": "dict-not-spec"})

    pm.register(Wrong(), name="wrong")
    try:
        with pytest.warns(PluginWarning, match="registered a dict instead of a BackboneSpec"):
            assert "dict-not-spec" not in backbone_specs()
    finally:
        pm.unregister(name="wrong")


def _hacknip(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hacknip", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_installed_plugins_are_listed_with_their_package():
    listing = json.loads(_hacknip("list", "--json").stdout)
    backbones = {b["name"]: b for b in listing["backbones"]}
    assert backbones["chgnet"]["package"] == "hacknip-chgnet"
    assert backbones["sevennet"]["package"] == "hacknip-sevennet"
    assert {h["name"] for h in listing["heads"]} >= {"lightgbm", "xgboost", "mlp", "ridge"}
    plugins = json.loads(_hacknip("plugins", "--json").stdout)
    assert {p["package"] for p in plugins} >= {"hacknip-chgnet", "hacknip-sevennet", "hacknip-heads"}


def test_load_plugins_env_selects_plugins():
    only_heads = json.loads(_hacknip("list", "--json", env={"HACKNIP_LOAD_PLUGINS": "hacknip-heads"}).stdout)
    assert only_heads["backbones"] == [] and only_heads["heads"]
    nothing = json.loads(_hacknip("list", "--json", env={"HACKNIP_LOAD_PLUGINS": ""}).stdout)
    # no installed plugin, only hacknip-core's own heads (a default plugin, so that the core alone can run a job)
    assert nothing["backbones"] == []
    core_heads = sorted((h["name"], h["package"]) for h in nothing["heads"])
    assert core_heads == [("ensemble", "hacknip-core"), ("ridge", "hacknip-core")]


def test_listing_is_fast_and_imports_no_heavy_library():
    code = ("import sys, time; t = time.perf_counter(); from hacknip.cli import cli; "
            "from click.testing import CliRunner; r = CliRunner().invoke(cli, ['list']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'chgnet', 'sevenn', 'lightgbm', 'xgboost', 'pymatgen', 'sklearn') "
            "if m in sys.modules]; print(heavy, time.perf_counter() - t)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[]"), f"listing imported {result.stdout}"
    assert elapsed < 2.0, f"hacknip list took {elapsed:.2f} s"


def test_a_broken_plugin_is_skipped_with_a_warning(tmp_path):
    """A plugin whose module fails to import must not hide the others."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hacknip]\nbroken = module_that_does_not_exist\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = _hacknip("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "broken-plugin 1.0 (plugin 'broken') could not be loaded" in result.stderr
    assert "chgnet" in {b["name"] for b in json.loads(result.stdout)["backbones"]}


class MisspeltFactoryPlugin:
    @hookimpl
    def register_backbones(self, register):
        register(BackboneSpec(name="misspelt", factory="toy_backbone:lod", cutoff=3.5, layer_widths=(4,),
                              needs_supercell=False))

    @hookimpl
    def register_heads(self, register):
        register(HeadSpec(name="misspelt-head", factory="no_such_module:Head", task_kinds=frozenset({"regression"})))


def test_a_factory_that_cannot_be_imported_names_the_spec_and_the_path():
    from hacknip.plugins.registry import load_backbone

    pm.register(MisspeltFactoryPlugin(), name="misspelt")
    try:
        with pytest.raises(ImportError, match=r"the backbone 'misspelt' \(.*\) names the factory 'toy_backbone:lod', "
                                              r"which cannot be imported \(AttributeError"):
            load_backbone("misspelt")
        with pytest.raises(ImportError, match=r"the head 'misspelt-head' .* 'no_such_module:Head'.*ModuleNotFoundError"):
            create_head("misspelt-head")
    finally:
        pm.unregister(name="misspelt")
