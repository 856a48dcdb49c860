"""The record-source interface every dataset adapter implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.data.validate import Limits, check_record


@dataclass
class LoadResult:
    """Everything a source produced: the good records, the quarantined ones and counts by reason."""

    records: list[Record] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)

    @property
    def bad_counts(self) -> Counter:
        """Quarantined records per field."""
        return Counter(b.field for b in self.bad)


class RecordSource(ABC):
    """Yields `Record`s, or `BadRecord`s for entries that failed parsing or validation.

    Adapters implement `_iter_raw` (layout-specific parsing; a parse failure of one entry yields a
    BadRecord naming it and never stops the iteration). `__iter__` adds the checks common to every
    source (image decodes, text sizes, mask shape, ...) from `medpo_ray.data.validate`.
    """

    kind: ClassVar[str]

    def __init__(self, path: str | Path, split: str | None = None, limits: Limits | None = None):
        self.path = Path(path)
        self.split = split
        self.limits = limits or Limits()

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True when `path` looks like this source's layout (cheap: file names and headers only)."""
        return False

    @abstractmethod
    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        """Layout-specific parsing."""

    def wants(self, split: str) -> bool:
        """Whether `split` is asked for; adapters skip other splits early, so their problems are not reported."""
        return self.split is None or split == self.split

    @property
    def root(self) -> Path:
        """The dataset directory: file paths inside records must stay under it."""
        return self.path if self.path.is_dir() else self.path.parent

    def __iter__(self) -> Iterator[Record | BadRecord]:
        for item in self._iter_raw():
            if isinstance(item, Record):
                if not self.wants(item.split):
                    continue
                problem = check_record(item, root=self.root, limits=self.limits)
                item = problem if problem is not None else item
            if isinstance(item, BadRecord) and not item.source:
                item = replace(item, source=self.kind)
            yield item

    def load(self) -> LoadResult:
        """Read the whole source into memory."""
        out = LoadResult()
        for item in self:
            (out.records if isinstance(item, Record) else out.bad).append(item)
        return out
