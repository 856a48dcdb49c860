"""Record sources: one interface, an adapter per dataset layout, and a registry that opens a path by
kind or detects the kind from the layout."""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from medpo_ray.errors import MedpoError

# Kind -> "module:Class". Imported on first use: adapters import this package's `base`, so importing
# them here eagerly would be circular, and `--help` should not pay for pyarrow or pydicom.
_CLASS_PATHS = {
    "embedded": "medpo_ray.data.sources.embedded:EmbeddedSource",
    "hf_vqa": "medpo_ray.data.sources.hf_vqa:HFVQASource",
    "slake": "medpo_ray.data.sources.slake:SlakeSource",
    "iu_xray": "medpo_ray.data.sources.iu_xray:IUXraySource",
    "mimic_cxr": "medpo_ray.data.sources.mimic_cxr:MimicCXRSource",
    "box_csv": "medpo_ray.data.sources.box_csv:BoxCSVSource",
}


class UnknownSourceError(MedpoError):
    """A dataset kind that is not registered, or a path whose layout matches no kind."""


class _Sources(Mapping):
    """kind -> RecordSource class, importing each adapter module on first access."""

    def __getitem__(self, kind: str) -> type:
        if kind not in _CLASS_PATHS:
            raise UnknownSourceError(f"unknown dataset kind {kind!r}; known kinds: {', '.join(_CLASS_PATHS)}")
        module, name = _CLASS_PATHS[kind].split(":")
        return getattr(importlib.import_module(module), name)

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASS_PATHS)

    def __len__(self) -> int:
        return len(_CLASS_PATHS)


SOURCES: Mapping[str, type] = _Sources()


def detect_kind(path: str | Path) -> str:
    """The kind whose layout `path` has; UnknownSourceError naming what was looked for otherwise."""
    path = Path(path)
    if not path.exists():
        raise UnknownSourceError(f"dataset path not found: {str(path)!r}")
    for kind in _CLASS_PATHS:
        if SOURCES[kind].detect(path):
            return kind
    raise UnknownSourceError(
        f"cannot tell the dataset kind of {str(path)!r}: expected an embedded or HF-style VQA parquet, "
        "a SLAKE folder (imgs/ + train.json), IU-Xray XML reports, MIMIC-CXR reports (files/p*/) with a "
        "CheXpert CSV, or a VinDr-CXR / MS-CXR box CSV; pass --kind one of " + ", ".join(_CLASS_PATHS))


def open_source(kind: str | None, path: str | Path, split: str | None = None, limits=None):
    """A RecordSource of `kind` (detected from the layout when None or 'auto') reading `path`."""
    if kind in (None, "auto"):
        kind = detect_kind(path)
    if not Path(path).exists():
        raise UnknownSourceError(f"dataset path not found: {str(path)!r}")
    return SOURCES[kind](path, split=split, limits=limits)
