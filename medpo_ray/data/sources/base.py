"""The record-source interface every dataset adapter implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medpo_ray.data.record import BadRecord, Record


@dataclass
class LoadResult:
    """Everything a source produced: the good records, the quarantined ones and counts by reason."""

    records: list[Record] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)

    @property
    def bad_counts(self) -> Counter:
        return Counter(b.field for b in self.bad)


class RecordSource(ABC):
    """Yields `Record`s, or `BadRecord`s for entries that failed parsing or validation.

    Adapters implement `_iter_raw` (layout-specific parsing; a parse failure of one entry yields a
    BadRecord naming it and never stops the iteration). `__iter__` adds the checks common to every
    source (image decodes, text sizes, mask shape, ...) from `medpo_ray.data.validate`.
    """

    kind: ClassVar[str]

    def __init__(self, path: str | Path, split: str | None = None):
        self.path = Path(path)
        self.split = split

    @abstractmethod
    def _iter_raw(self) -> Iterator[Record | BadRecord]:
        """Layout-specific parsing."""

    def __iter__(self) -> Iterator[Record | BadRecord]:
        from medpo_ray.data.validate import check_record

        for item in self._iter_raw():
            if isinstance(item, Record):
                if self.split is not None and item.split != self.split:
                    continue
                problem = check_record(item, root=self.path)
                yield problem if problem is not None else item
            else:
                yield item

    def load(self) -> LoadResult:
        """Read the whole source into memory."""
        out = LoadResult()
        for item in self:
            (out.records if isinstance(item, Record) else out.bad).append(item)
        return out
