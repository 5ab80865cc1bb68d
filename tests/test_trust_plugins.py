"""Trust: one faulty third-party plugin cannot break every command, unknown names never suggest a made-up package,
and backbone expressions are checked before any model loads.

Plugins are registered as throwaway objects with ``pm.register`` and unregistered afterwards (the style of simonw/llm's
tests); entry points are faked by monkeypatching ``importlib.metadata.entry_points``. Nothing here loads a model.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import warnings

import pytest
from click.testing import CliRunner

from hacknip import hookimpl
from hacknip.cli import cli
from hacknip.errors import HacknipError, InputError
from hacknip.features.compose import Member, parse_backbones
from hacknip.plugins import manager as plugins
from hacknip.plugins.backbone import BackboneSpec
from hacknip.plugins.head import HeadSpec
from hacknip.plugins.manager import PluginInfo, PluginWarning, pm
from hacknip.plugins.registry import (
    UnknownNameError,
    backbone_specs,
    check_backbones,
    get_head_spec,
    head_specs,
    known_package,
    resolve_backbone,
)

EVIL = "evil-plugin 6.6.6"


def backbone(name: str, widths=(8, 8, 8)) -> BackboneSpec:
    # the factory names a module that does not exist: any test that loaded a model would fail
    return BackboneSpec(name=name, factory="no_such_module_for_trust_tests:load", cutoff=4.0, layer_widths=widths,
                        needs_supercell=False)


def head(name: str) -> HeadSpec:
    return HeadSpec(name=name, factory="no_such_module_for_trust_tests:Head", task_kinds=frozenset({"regression"}))


class GoodPlugin:
    @hookimpl
    def register_backbones(self, register):
        register(backbone("trust-good", widths=(4, 6, 6)))

    @hookimpl
    def register_heads(self, register):
        register(head("trust-good-head"))


@pytest.fixture
def install(monkeypatch):
    """``install(plugin, name, package, version)`` registers a plugin object as if that distribution provided it."""
    plugins.load_plugins()
    installed = []

    def install(plugin, name, package="evil-plugin", version="6.6.6"):
        pm.register(plugin, name=name)
        installed.append(name)
        monkeypatch.setitem(plugins._distributions, name, PluginInfo(name, package, version))
        return plugin

    install(GoodPlugin(), "trust-good", package="", version="")
    yield install
    for name in installed:
        pm.unregister(name=name)


def assert_others_still_listed():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # already checked by the caller
        backbones, heads = backbone_specs(), head_specs()
    assert "trust-good" in backbones and "trust-good-head" in heads
    assert backbones["chgnet"].package == "hacknip-chgnet"  # the installed plugins are untouched
    assert {"lightgbm", "ridge"} <= set(heads)


def one_warning(record, *needles) -> str:
    messages = [str(w.message) for w in record if issubclass(w.category, PluginWarning)]
    matching = [m for m in messages if all(n in m for n in needles)]
    assert matching, f"no PluginWarning with {needles}: {messages}"
    assert all("\n" not in m for m in messages)
    return matching[0]


# --- 1. a faulty plugin is skipped with a warning naming its distribution --------------------------------------------


class FakeDist:
    def __init__(self, name, version):
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    def __init__(self, name, dist, load):
        self.name, self.dist, self._load = name, dist, load
        self.group = plugins.ENTRY_POINT_GROUP

    def load(self):
        return self._load()


@pytest.fixture
def entry_points(monkeypatch):
    """``entry_points(*fakes)``: make load_plugins see these entry points (the real plugins stay registered)."""
    plugins.load_plugins()
    before = {name for name, _ in pm.list_name_plugin()}

    def fake(*entry_points):
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: list(entry_points))
        monkeypatch.setattr(plugins, "_loaded", False)
        monkeypatch.setattr(plugins, "_loaded_entry_points", set(plugins._loaded_entry_points))

    yield fake
    for name, _ in pm.list_name_plugin():
        if name not in before:
            pm.unregister(name=name)
            plugins._distributions.pop(name, None)


def _raise(error):
    def load():
        raise error
    return load


@pytest.mark.parametrize("error, shown", [
    (RuntimeError("boom\nsecond line"), "RuntimeError: boom second line"),
    (ImportError("No module named 'torchh'"), "ImportError: No module named 'torchh'"),
    (SystemExit(3), "sys.exit(3)"),
])
def test_an_entry_point_that_raises_is_skipped(entry_points, error, shown):
    entry_points(FakeEntryPoint("evil", FakeDist("evil-plugin", "6.6.6"), _raise(error)),
                 FakeEntryPoint("fine", FakeDist("fine-plugin", "1.0"), lambda: GoodPlugin()))
    with pytest.warns(PluginWarning) as record:
        plugins.load_plugins()
    message = one_warning(record, EVIL, "'evil'", shown)
    assert "could not be loaded and is skipped" in message and "uninstall evil-plugin" in message
    assert "trust-good" in backbone_specs() and "chgnet" in backbone_specs()  # the entry point after it still loads
    assert plugins.plugin_info(pm.get_plugin("fine")) == PluginInfo("fine", "fine-plugin", "1.0")


def test_an_entry_point_whose_hooks_pluggy_rejects_is_skipped(entry_points):
    class Misspelt:
        @hookimpl
        def register_backbones(self, registr):
            registr(backbone("never"))

    entry_points(FakeEntryPoint("misspelt", FakeDist("misspelt-plugin", "0.2"), lambda: Misspelt()))
    with pytest.warns(PluginWarning) as record:
        plugins.load_plugins()
    one_warning(record, "misspelt-plugin 0.2 (plugin 'misspelt') could not be registered and is skipped")
    assert pm.get_plugin("misspelt") is None and "chgnet" in backbone_specs()


def test_keyboard_interrupt_in_an_entry_point_goes_through(entry_points):
    entry_points(FakeEntryPoint("evil", FakeDist("evil-plugin", "6.6.6"), _raise(KeyboardInterrupt())))
    with pytest.raises(KeyboardInterrupt):
        plugins.load_plugins()


def test_entry_points_load_own_distributions_first_and_the_rest_by_name(entry_points):
    order = []

    def loading(name):
        def load():
            order.append(name)
            return type(f"Plugin_{name}", (), {})()
        return load

    entry_points(*(FakeEntryPoint(name, FakeDist(package, "1"), loading(name))
                   for name, package in [("zz", "zz-plugin"), ("aa", "aa-plugin"), ("mid", "hacknip-not-ours"),
                                         ("own", "Hacknip_Heads")]))
    plugins.load_plugins()
    assert order == ["own", "aa", "mid", "zz"]


def test_an_entry_point_name_taken_by_another_distribution_still_loads(entry_points):
    entry_points(FakeEntryPoint("chgnet", FakeDist("other-plugin", "2.0"), lambda: GoodPlugin()))
    plugins.load_plugins()
    assert plugins.plugin_info(pm.get_plugin("chgnet")).package == "hacknip-chgnet"
    assert plugins.plugin_info(pm.get_plugin("other-plugin:chgnet")) == PluginInfo("other-plugin:chgnet", "other-plugin",
                                                                                  "2.0")
    assert "trust-good" in backbone_specs()


class RaisingHook:
    @hookimpl
    def register_backbones(self, register):
        register(backbone("evil-one"))
        register(backbone("evil-two"))
        raise RuntimeError("cannot reach the model server")

    @hookimpl
    def register_heads(self, register):
        register(head("evil-head"))  # this hook is fine: only the faulty hook's registrations are skipped


def test_a_hook_that_raises_contributes_nothing(install):
    install(RaisingHook(), "evil")
    with pytest.warns(PluginWarning) as record:
        backbones = backbone_specs()
    message = one_warning(record, EVIL, "raised RuntimeError: cannot reach the model server in register_backbones")
    assert "all its backbones are skipped" in message
    assert "evil-one" not in backbones and "evil-two" not in backbones
    assert head_specs()["evil-head"].package == "evil-plugin"
    assert_others_still_listed()


class ExitingHook:
    @hookimpl
    def register_backbones(self, register):
        register(backbone("evil-one"))
        sys.exit(3)


def test_a_hook_that_calls_sys_exit_is_skipped(install):
    install(ExitingHook(), "evil")
    with pytest.warns(PluginWarning) as record:
        assert "evil-one" not in backbone_specs()
    one_warning(record, EVIL, "called sys.exit(3) in register_backbones")
    assert_others_still_listed()


def test_keyboard_interrupt_in_a_hook_goes_through(install):
    class Interrupted:
        @hookimpl
        def register_backbones(self, register):
            raise KeyboardInterrupt

    install(Interrupted(), "evil")
    with pytest.raises(KeyboardInterrupt):
        backbone_specs()


class WrongType:
    @hookimpl
    def register_backbones(self, register):
        register(backbone("evil-valid"))
        register({"name": "dict-not-spec"})

    @hookimpl
    def register_heads(self, register):
        register(backbone("a-backbone-as-a-head"))


def test_registering_the_wrong_type_is_skipped(install):
    install(WrongType(), "evil")
    with pytest.warns(PluginWarning) as record:
        backbones, heads = backbone_specs(), head_specs()
    one_warning(record, EVIL, "registered a dict instead of a BackboneSpec in register_backbones")
    one_warning(record, EVIL, "registered a BackboneSpec instead of a HeadSpec in register_heads")
    assert "evil-valid" not in backbones and "a-backbone-as-a-head" not in heads
    assert_others_still_listed()


@pytest.mark.parametrize("spec, fault", [
    (backbone("no-layers", widths=()), "layer_widths ()"),
    (backbone("bad+name"), "named 'bad+name'"),
    (backbone("chgnet@2"), "named 'chgnet@2'"),
    (backbone(""), "named ''"),
])
def test_a_malformed_spec_is_skipped(install, spec, fault):
    class Malformed:
        @hookimpl
        def register_backbones(self, register):
            register(spec)

    install(Malformed(), "evil")
    with pytest.warns(PluginWarning) as record:
        assert spec.name not in backbone_specs()
    one_warning(record, EVIL, fault)
    assert_others_still_listed()


class Squatter:
    @hookimpl
    def register_backbones(self, register):
        register(backbone("chgnet", widths=(1,)))
        register(backbone("Ridge-Backbone"))
        register(backbone("evil-own-name"))


def test_a_name_taken_by_an_own_distribution_stays_with_it(install):
    install(Squatter(), "aaa", package="aaa-sorts-first", version="0.1")
    with pytest.warns(PluginWarning) as record:
        backbones = backbone_specs()
    message = one_warning(record, "aaa-sorts-first 0.1", "'chgnet'")
    assert "which hacknip-chgnet" in message and "the one from aaa-sorts-first is ignored" in message
    assert backbones["chgnet"].package == "hacknip-chgnet" and backbones["chgnet"].layer_widths != (1,)
    assert backbones["evil-own-name"].package == "aaa-sorts-first"  # its other names are kept
    assert_others_still_listed()


def _shares(name):
    class Shares:
        @hookimpl
        def register_backbones(self, register):
            register(backbone(name))

    return Shares()


@pytest.mark.parametrize("first, second", [("alpha-plugin", "zeta-plugin"), ("zeta-plugin", "alpha-plugin")])
def test_between_third_parties_the_first_by_distribution_name_wins(install, first, second):
    """pluggy calls the last registered plugin first; the winner must not depend on the order of registration."""
    install(_shares("shared"), first, package=first, version="1.0")
    install(_shares("SHARED"), second, package=second, version="1.0")  # names compare case-insensitively
    with pytest.warns(PluginWarning) as record:
        backbones = backbone_specs()
    [shared] = [spec for name, spec in backbones.items() if name.casefold() == "shared"]
    assert shared.package == "alpha-plugin"
    message = one_warning(record, "zeta-plugin 1.0", "which alpha-plugin 1.0")
    assert "the one from zeta-plugin is ignored" in message
    assert_others_still_listed()


def test_hacknip_list_and_plugins_work_with_a_faulty_plugin(install):
    install(RaisingHook(), "evil")
    install(WrongType(), "evil-types", package="evil-types", version="1")
    install(Squatter(), "squatter", package="squatter", version="2")
    with pytest.warns(PluginWarning):
        listed = CliRunner().invoke(cli, ["list", "--json"])
        table = CliRunner().invoke(cli, ["list"])
        plugin_rows = CliRunner().invoke(cli, ["plugins", "--json"])
    assert listed.exit_code == 0, listed.output
    assert table.exit_code == 0, table.output
    assert plugin_rows.exit_code == 0, plugin_rows.output
    listing = json.loads(listed.output)
    backbones = {b["name"]: b for b in listing["backbones"]}
    assert backbones["chgnet"]["package"] == "hacknip-chgnet" and "trust-good" in backbones
    assert "evil-one" not in backbones and "evil-valid" not in backbones
    assert {"lightgbm", "ridge", "evil-head"} <= {h["name"] for h in listing["heads"]}
    assert {"evil-plugin", "hacknip-chgnet"} <= {row["package"] for row in json.loads(plugin_rows.output)}


# --- 2. unknown names: close matches among installed names, install hints for this project's packages only --------


def test_a_typo_suggests_the_installed_name_not_a_package():
    with pytest.raises(UnknownNameError) as caught:
        resolve_backbone("chgnt")
    message = str(caught.value)
    assert "Did you mean chgnet?" in message and "pip install" not in message and "\n" not in message


def test_an_unrelated_name_gets_no_install_hint():
    with pytest.raises(UnknownNameError) as caught:
        resolve_backbone("totally-unknown-net:/models/x.pt")
    message = str(caught.value)
    assert "no installed plugin provides the backbone 'totally-unknown-net:/models/x.pt'" in message
    assert "pip install" not in message and "hacknip list" in message


def test_a_head_typo_suggests_the_head():
    with pytest.raises(UnknownNameError, match="Did you mean lightgbm") as caught:
        get_head_spec("lightgmb")
    assert "pip install" not in str(caught.value)


def test_a_project_name_whose_package_is_missing_says_which_package(monkeypatch):
    from hacknip.plugins import registry
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, "hacknip-chgnet")
    only_chgnet = {"chgnet": backbone_specs()["chgnet"]}
    message = str(registry._unknown("backbone", "orb-v3-direct-20-omat:/w.ckpt", only_chgnet))
    assert "It comes with hacknip-orb: pip install hacknip-orb" in message
    assert "add hacknip-orb to HACKNIP_LOAD_PLUGINS" in message and "installed: chgnet" in message


def test_a_project_name_missing_from_its_installed_package_says_so():
    with pytest.raises(UnknownNameError) as caught:
        resolve_backbone("orb-v9-imaginary")
    message = str(caught.value)
    assert "hacknip-orb is installed but provides no backbone of that name" in message
    assert "pip install hacknip-orb-v9" not in message


@pytest.mark.parametrize("kind, name, package", [
    ("backbone", "chgnet", "hacknip-chgnet"),
    ("backbone", "CHGNet:/models/m.pth", "hacknip-chgnet"),
    ("backbone", "sevennet:7net-l3i5", "hacknip-sevennet"),
    ("backbone", "orb-v2", "hacknip-orb"),
    ("backbone", "orb-v3-conservative-inf-omat", "hacknip-orb"),
    ("backbone", "mace", "hacknip-mace"),
    ("backbone", "mace-mp-0a-medium", "hacknip-mace"),
    ("backbone", "uma-s-1p1:omat", "hacknip-equiformer"),
    ("backbone", "esen-sm-direct-all-omol", "hacknip-equiformer"),
    ("backbone", "equiformer-v2", "hacknip-equiformer"),
    ("head", "modnet", "hacknip-heads"),
    ("backbone", "chgnt", None),
    ("backbone", "orbital", None),
    ("backbone", "macemp", None),
    ("backbone", "evil", None),
    ("head", "chgnet", None),
])
def test_install_hints_only_for_the_projects_packages(kind, name, package):
    assert known_package(kind, name) == package


def test_every_installed_project_name_maps_to_its_package():
    for name, spec in backbone_specs().items():
        if spec.package in plugins.OWN_DISTRIBUTIONS:
            assert known_package("backbone", name) == spec.package, name
    for name, spec in head_specs().items():
        if spec.package in plugins.OWN_DISTRIBUTIONS:
            assert known_package("head", name) == spec.package, name


def test_names_match_case_insensitively():
    assert resolve_backbone("CHGNet") == (backbone_specs()["chgnet"], None)
    spec, checkpoint = resolve_backbone("CHGNet:/Models/My.PTH")
    assert spec.name == "chgnet" and checkpoint == "/Models/My.PTH"  # only the name part is case-folded
    assert resolve_backbone("SevenNet:7net-L3I5")[0].name == "sevennet:7net-l3i5"
    assert get_head_spec("LightGBM").name == "lightgbm"


def test_an_empty_checkpoint_is_an_input_error():
    with pytest.raises(InputError, match="ends with ':' but names no checkpoint"):
        resolve_backbone("chgnet:")


# --- 3. backbone expressions are validated when parsed, and against the specs before any model loads -------------


@pytest.mark.parametrize("expression, problem", [
    ("chgnet@3-1", "the range 3-1 runs backwards (write 1-3)"),
    ("chgnet@-1", "'-1' is negative"),
    ("chgnet@", "no layers after '@'"),
    ("chgnet@1,,2", "an empty item in the layer list"),
    ("chgnet@x", "'x' is not a layer number"),
    ("chgnet@1,x", "'x' is not a layer number"),
    ("sevennet+chgnet@2-", "'2-' is not a layer number"),
    ("chgnet@0-99999999", "beyond any backbone"),
    ("sevennet:/models/a@", "no layers after '@'"),
    ("sevennet:/models/a@1-,2", "'1-' is not a layer number"),
    ("chgnet@1@2", "more than one '@'"),
])
def test_malformed_layer_lists_are_input_errors(expression, problem):
    with pytest.raises(InputError) as caught:
        parse_backbones(expression)
    message = str(caught.value)
    assert problem in message and "\n" not in message
    assert isinstance(caught.value, HacknipError) and isinstance(caught.value, ValueError)
    if "more than one" not in problem:
        assert "@1-3" in message and "@all" in message  # says how to write it


@pytest.mark.parametrize("expression, expected", [
    ("sevennet:/models/a@b.pth", [("sevennet:/models/a@b.pth", None, False)]),  # '@' in a path stays in the name
    ("sevennet:/models/a@2", [("sevennet:/models/a", (2,), False)]),
    ("CHGNet@ALL", [("CHGNet", None, True)]),
    ("chgnet @ 1, 3-4", [("chgnet", (1, 3, 4), False)]),
])
def test_well_formed_expressions(expression, expected):
    assert [(m.name, m.layers, m.all_layers) for m in parse_backbones(expression)] == expected


def test_the_same_backbone_in_two_spellings_is_listed_twice():
    with pytest.raises(InputError, match="listed twice"):
        parse_backbones("chgnet+CHGNet@2")
    assert len(parse_backbones("mace:/m/A.model+mace:/m/a.model")) == 2  # paths stay case-sensitive


def test_check_backbones_catches_layers_beyond_the_backbone(install):
    with pytest.raises(InputError) as caught:
        check_backbones("chgnet@9")
    assert str(caught.value).startswith("chgnet has layers 0..4; chgnet@9 asks for [9]")
    with pytest.raises(InputError, match=r"trust-good has layers 0..2; trust-good@1,3 asks for \[3\]"):
        check_backbones("chgnet@2+trust-good@1,3")


def test_check_backbones_resolves_names_without_loading(install):
    members = check_backbones("CHGNet@1-2+TRUST-GOOD+trust-good:/Models/X.pt@7")
    assert members == [Member("chgnet", (1, 2)), Member("trust-good", None), Member("trust-good:/Models/X.pt", (7,))]
    assert [m.name for m in check_backbones([Member("Trust-Good", None, all_layers=True)])] == ["trust-good"]
    with pytest.raises(UnknownNameError, match="Did you mean trust-good"):
        check_backbones("chgnet+trust-god@1")
    assert check_backbones("chgnet+trust-god@1", allow_missing=True)[1] == Member("trust-god", (1,))
    stored = {"elsewhere-net"}.__contains__  # e.g. names the feature store holds features for
    assert check_backbones("elsewhere-net@2", allow_missing=stored) == [Member("elsewhere-net", (2,))]
    with pytest.raises(UnknownNameError, match="trust-god"):
        check_backbones("elsewhere-net+trust-god", allow_missing=stored)
    with pytest.raises(InputError, match="listed twice"):
        check_backbones([Member("chgnet", None), Member("CHGNET", (1,))])


def test_a_misspelt_hook_is_named_with_the_hook_it_meant(entry_points):
    class Misspelt:
        @hookimpl
        def register_backbone(self, register):
            register(backbone("never"))

    entry_points(FakeEntryPoint("typo", FakeDist("typo-plugin", "0.1"), lambda: Misspelt()))
    with pytest.warns(PluginWarning) as record:
        plugins.load_plugins()
    one_warning(record, "typo-plugin 0.1 (plugin 'typo') implements 'register_backbone', which is not a hacknip hook",
                "did you mean register_backbones?")
    assert "never" not in backbone_specs()
