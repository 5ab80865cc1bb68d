"""``hacknip.Featurizer``: pretrained-potential embeddings as a scikit-learn transformer.

It turns structures into the same pooled layer features ``hacknip run`` uses, through the same feature store, so a
structure is computed once however many folds, fits and grid points see it (and not at all when ``hacknip featurize``
stored it already). Backbones load on first use and stay in a per-process cache (:func:`cached_backbone`), never in
the estimator: ``clone``, pickling and joblib's process workers only ever see the parameters.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from hacknip.data.structures import (
    DISORDERED_CHOICES,
    BadInputError,
    Dataset,
    Sample,
    checked_atoms,
    cif_text_to_atoms,
    pymatgen_to_atoms,
    structure_file_to_atoms,
)
from hacknip.errors import InputError
from hacknip.features.compose import Member
from hacknip.features.describe import describe
from hacknip.features.featurize import featurize, layer_matrix
from hacknip.features.pooling import parse_pooling
from hacknip.plugins.backbone import Backbone
from hacknip.plugins.descriptor import Descriptor
from hacknip.plugins.registry import (
    check_backbones,
    descriptor_spec,
    load_backbone,
    load_descriptor,
    resolve_backbone,
)
from hacknip.store import FeatureStore

ASE_SUFFIXES = (".xyz", ".extxyz", ".traj")
"""File suffixes read with ASE (one structure per file); any other path is read with pymatgen (CIF, POSCAR, ...)."""


class Featurizer(TransformerMixin, BaseEstimator):
    """Structures -> pooled layer embeddings of pretrained interatomic potentials (a scikit-learn transformer).

    ``transform(X)`` takes a sequence (list, tuple, 1-D numpy object array, pandas Series or one-column DataFrame)
    of pymatgen ``Structure``, ASE ``Atoms``, CIF text (a string of several lines) or paths to CIF / POSCAR / extxyz
    files (one structure each), and returns a float64 array of shape ``(len(X), n_features)``.

    - ``backbone``: an expression as on the command line, with fixed layers for each backbone: ``chgnet@2``,
      ``chgnet@all``, ``sevennet@1,2+chgnet@4``. Columns follow the expression: backbone, then layer, then pooling
      statistic, then channel, named ``"{backbone}:L{layer}:{statistic}:{channel}"`` (``get_feature_names_out``).
    - ``pooling``: ``mean``, ``sum``, ``max``, ``std`` or several joined by ``+``.
    - ``store``: the feature store folder (default ``$HACKNIP_HOME/features``, shared with the command line).
    - ``on_error``: only ``"raise"``. A transformer returns one row per input, so a structure that cannot be read or
      featurised raises an :class:`~hacknip.errors.InputError` naming its position (``X[3]: ...``); to leave bad
      structures out, drop them first (``hacknip.read_dataset(path, on_error="skip")`` lists what it left out).
    - ``disordered``: ``"refuse"`` partially occupied sites, or featurise an ordered ``"approximant"``.
    - ``batch_size``, ``batch_atoms``: the most structures and atoms per forward pass, whichever limit comes first
      (``batch_atoms=None``: the default for the device, :func:`hacknip.features.batching.default_batch_atoms`).

    ``fit`` learns nothing: it checks the parameters and fixes the columns. No progress bars are drawn.

    Example::

        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        import hacknip

        data = hacknip.read_dataset("matbench_phonons.json.gz").head(200)
        structures = [sample.atoms for sample in data.samples]
        model = make_pipeline(hacknip.Featurizer("chgnet@all"), StandardScaler(), Ridge())
        model.fit(structures, data.targets)
    """

    def __init__(self, backbone: str = "chgnet@2", pooling: str = "mean", device: str = "cpu", batch_size: int = 16,
                 store: str | os.PathLike | None = None, on_error: str = "raise", disordered: str = "refuse",
                 batch_atoms: int | None = None):
        self.backbone = backbone
        self.pooling = pooling
        self.device = device
        self.batch_size = batch_size
        self.store = store
        self.on_error = on_error
        self.disordered = disordered
        self.batch_atoms = batch_atoms

    def fit(self, X: Any, y: Any = None) -> Featurizer:
        """Check the parameters and fix the columns (``layers_``, ``pooling_``, ``feature_names_out_``); nothing is
        featurised and no model is loaded (except a backbone given as a checkpoint, whose model decides its layers).
        ``X`` is only checked to be a sequence of items; ``y`` is ignored."""
        self._check_params()
        structure_items(X)
        self.pooling_ = parse_pooling(self.pooling)
        members = fixed_members(self.backbone)
        widths = {member.name: _layer_widths(member.name, self.device) for member in members}
        self.layers_ = {member.name: member.resolve(len(widths[member.name])) for member in members}
        names = []
        for name, layers in self.layers_.items():
            if descriptor_spec(name) is not None:  # its own feature names: no layers, no pooling
                names += [f"{name}:{feature}" for feature in cached_descriptor(name).feature_names]
            else:
                names += feature_names({name: layers}, widths, self.pooling_)
        self.feature_names_out_ = np.asarray(names, dtype=object)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The features of every structure of ``X``, in order: computed into the store where missing, read back."""
        check_is_fitted(self)
        items = structure_items(X)
        if not items:
            return np.empty((0, len(self.feature_names_out_)))
        dataset = structures_dataset(items, self.disordered)
        store = FeatureStore(self.store)
        blocks = [self._block(dataset, store, name, layers) for name, layers in self.layers_.items()]
        features = np.concatenate(blocks, axis=1).astype(np.float64, copy=False)
        if features.shape[1] != len(self.feature_names_out_):
            raise RuntimeError(f"{self.backbone} gave {features.shape[1]} columns where its plugins' layer_widths "
                               f"declare {len(self.feature_names_out_)}: a plugin's BackboneSpec is wrong")
        return features

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Column names, ``"{backbone}:L{layer}:{statistic}:{channel}"``. ``input_features`` is not used (the input
        is structures, not named columns); it is there for the scikit-learn API."""
        check_is_fitted(self)
        return self.feature_names_out_.copy()

    def __sklearn_tags__(self):
        # The input is a sequence of structures (objects, CIF text, paths), not a 2-D numeric array: like text
        # vectorizers, a Featurizer sets no n_features_in_ / feature_names_in_.
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def _check_params(self) -> None:
        if self.on_error != "raise":
            raise InputError(f"on_error={self.on_error!r}: a Featurizer returns one row per structure, so a bad one can "
                             f"only raise (on_error='raise'); drop bad structures first, e.g. read them with "
                             f"hacknip.read_dataset(path, on_error='skip')")
        if self.disordered not in DISORDERED_CHOICES:
            raise InputError(f"disordered={self.disordered!r}: use one of {', '.join(DISORDERED_CHOICES)}")
        if not isinstance(self.batch_size, numbers.Integral) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise InputError(f"batch_size={self.batch_size!r}: give a whole number of structures, at least 1")
        if self.batch_atoms is not None and (not isinstance(self.batch_atoms, numbers.Real)
                                             or isinstance(self.batch_atoms, bool) or not self.batch_atoms >= 1):
            raise InputError(f"batch_atoms={self.batch_atoms!r}: give a number of atoms, at least 1, or None")
        for name in ("backbone", "pooling", "device"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name}={getattr(self, name)!r}: give a string")

    def _block(self, dataset: Dataset, store: FeatureStore, name: str, layers: tuple[int, ...]) -> np.ndarray:
        """One backbone's columns: featurise what the store lacks (every layer, as the command line does, so other
        layers cost nothing later), then pool the stored statistics."""
        try:
            if descriptor_spec(name) is not None:
                report = describe(dataset, cached_descriptor(name), store, name=name)
            else:
                report = featurize(dataset, cached_backbone(name, self.device), store, batch_size=self.batch_size,
                                   name=name, batch_atoms=self.batch_atoms)
        except BadInputError as error:  # its message speaks of --on-error; say where the item is instead
            raise InputError(f"{error.row}: {error.reason}") from None
        return layer_matrix(report.features, report.keys, layers, self.pooling_)


@functools.lru_cache(maxsize=8)
def cached_backbone(name: str, device: str = "cpu") -> Backbone:
    """The backbone a :class:`Featurizer` uses, loaded once per process and kept by ``(name, device)`` as the
    Featurizer passes them (``cached_backbone.cache_clear()`` frees them). Example:
    ``cached_backbone("chgnet", "cpu").layer_widths``."""
    return load_backbone(name, device=device)


@functools.lru_cache(maxsize=8)
def cached_descriptor(name: str) -> Descriptor:
    """A descriptor a :class:`Featurizer` uses, loaded once per process."""
    return load_descriptor(name)


def fixed_members(expression: str) -> list[Member]:
    """A backbone expression whose every backbone has fixed layers (``chgnet@2``, ``chgnet@all``), checked against
    the installed plugins; a backbone without ``@LAYERS`` (which ``hacknip run`` sweeps) is an error."""
    members = check_backbones(expression)
    for member in members:
        if member.layers is None and not member.all_layers:
            raise InputError(f"backbone {member.name!r} has no @LAYERS: a Featurizer's columns are fixed, so say which "
                             f"layers, e.g. {member.name}@2 or {member.name}@all (hacknip run sweeps the layers to pick "
                             f"one)")
    return members


def _layer_widths(name: str, device: str) -> tuple[int, ...]:
    """From the plugin's spec without loading the model, except for a checkpoint (``mace:/x.model``): its model
    decides its layers."""
    if (described := descriptor_spec(name)) is not None:
        return (described.width,)
    spec, checkpoint = resolve_backbone(name)
    return tuple(spec.layer_widths) if checkpoint is None else tuple(cached_backbone(name, device).layer_widths)


def feature_names(layers: dict[str, Sequence[int]], widths: dict[str, Sequence[int]],
                  pooling: Sequence[str]) -> list[str]:
    """Column names in :func:`hacknip.features.featurize.layer_matrix` order: backbone, layer, statistic, channel."""
    return [f"{name}:L{layer}:{statistic}:{channel}"
            for name, chosen in layers.items() for layer in chosen
            for statistic in pooling for channel in range(widths[name][layer])]


def structure_items(X: Any) -> list:
    """The items of ``X``: a list, tuple, 1-D (or one-column) numpy array, pandas Series or one-column DataFrame."""
    if isinstance(X, (str, os.PathLike, Atoms)) or _is_pymatgen_structure(X):
        raise InputError(f"X is a single structure ({type(X).__name__}); give a sequence of structures, e.g. [X]")
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # a pandas DataFrame
        if len(X.columns) != 1:
            raise InputError(f"X is a table with {len(X.columns)} columns; give its column of structures, e.g. "
                             f"X[{str(X.columns[0])!r}]" if len(X.columns) else "X is a table without columns")
        X = X.iloc[:, 0]
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise InputError(f"X is an array of shape {X.shape}; give a 1-D sequence of structures")
    elif not (isinstance(X, Sequence) or hasattr(X, "iloc")):
        raise InputError(f"X is a {type(X).__name__}; give a list, tuple, numpy array or pandas Series of structures")
    return list(X)


def structures_dataset(items: Sequence[Any], disordered: str = "refuse") -> Dataset:
    """A dataset of the items as ASE Atoms, each checked as the readers check a row (``X[i]`` in errors)."""
    samples = [Sample(str(position), f"X[{position}]", item_atoms(item, position, disordered), float("nan"))
               for position, item in enumerate(items)]
    return Dataset(samples, target_name="", source="X")


def item_atoms(item: Any, position: int, disordered: str = "refuse") -> Atoms:
    """One item as ASE Atoms, checked; an :class:`InputError` ``"X[position]: what is wrong"`` otherwise."""
    try:
        return checked_atoms(_as_atoms(item, disordered))
    except Exception as error:  # parsers raise anything from KeyError to their own types
        raise InputError(f"X[{position}]: {_reason(error)}") from error


def _as_atoms(item: Any, disordered: str) -> Atoms:
    if isinstance(item, Atoms):
        return item
    if _is_pymatgen_structure(item):
        return pymatgen_to_atoms(item, disordered)
    if isinstance(item, str) and "\n" in item.strip():
        return cif_text_to_atoms(item, disordered)
    if isinstance(item, (str, os.PathLike)):
        return _file_atoms(Path(item), disordered)
    raise ValueError(f"a {type(item).__name__} is not a structure; give a pymatgen Structure, ASE Atoms, CIF text or "
                     f"the path of a CIF, POSCAR or extxyz file")


def _file_atoms(path: Path, disordered: str) -> Atoms:
    if not path.is_file():
        raise ValueError(f"no such file: {path} (a string of one line is taken for a path; CIF text has several lines)")
    if path.suffix.lower() not in ASE_SUFFIXES:
        return structure_file_to_atoms(path, disordered)
    import ase.io

    frames = ase.io.read(path, index=":")
    if len(frames) != 1:
        raise ValueError(f"{path} holds {len(frames)} structures; give one structure per item, e.g. "
                         f"ase.io.read(path, index=':') for all of them")
    return frames[0]


def _reason(error: Exception) -> str:
    """An error as one line, worded for the library (the readers' messages name the command-line option)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if not isinstance(error, (ValueError, OSError)):
        line = f"unreadable structure ({type(error).__name__}{': ' + line if line else ''})"
    return line.replace("--disordered approximant", "disordered='approximant'")


def _is_pymatgen_structure(item: Any) -> bool:
    module = sys.modules.get("pymatgen.core.structure")  # not imported: cannot be a pymatgen object
    return module is not None and isinstance(item, module.IStructure)
