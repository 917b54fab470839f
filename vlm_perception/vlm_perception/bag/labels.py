"""Labels: when each queried object is really in view, written by hand in a small YAML file.

    # labels.yaml
    time: relative        # times in seconds from the first frame (default); `bag`: the frames'
                          # header stamps in seconds since the epoch, as the recording shows them
    queries:              # one entry per standing query, named as the node's `queries` parameter
      cat:
        - [0.0, 6.0]      # present from 0.0 s up to, not including, 6.0 s
      cup of coffee:
        - [2.0, 4.5]
        - [7.0, end]      # `end`: to the end of the bag
      rocket: []          # never in view

A frame is labelled present for a query when its header stamp lies in one of
the query's intervals, [start, end); every other frame is labelled absent.
`load_labels` checks the file alone (format, reversed or overlapping
intervals); `Labels.resolve` checks it against a run (query names, times
inside the bag) and gives the labels in nanoseconds of header stamp.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Optional

import yaml

from ..core.errors import LabelsError

TIME_BASES = ("relative", "bag")
END = "end"
_EXAMPLE = "e.g.\n  queries:\n    cat:\n      - [0.0, 6.0]"


def _ns(seconds: float) -> int:
    # Microseconds first: bag-time floats (1.7e9 s) are exact to the microsecond, not the nanosecond.
    return round(seconds * 1e6) * 1000


@dataclass(frozen=True)
class Interval:
    start: float  # seconds, as written
    end: Optional[float]  # None: to the end of the bag

    def text(self) -> str:
        return f"[{self.start:g}, {END if self.end is None else f'{self.end:g}'}]"


@dataclass(frozen=True)
class ResolvedLabels:
    """Labels as header-stamp nanoseconds: `present(query, stamp_ns)`."""

    path: Path
    intervals: dict[str, list[tuple[int, int]]]  # query -> [start_ns, end_ns) absolute, sorted

    def present(self, query: str, stamp_ns: int) -> bool:
        return any(start <= stamp_ns < end for start, end in self.intervals[query])


@dataclass(frozen=True)
class Labels:
    path: Path
    time_base: str  # one of TIME_BASES
    queries: dict[str, list[Interval]]  # in file order, intervals sorted by start

    def resolve(self, queries: Collection[str], first_ns: int, last_ns: int, period_ns: int) -> ResolvedLabels:
        """Check the labels against a run's queries and frame stamps (first, last, typical period)."""
        unknown = [query for query in self.queries if query not in queries]
        if unknown:
            raise LabelsError(
                f"{self.path} labels {', '.join(repr(q) for q in unknown)}, which the run never evaluated "
                f"(its queries: {', '.join(sorted(queries)) or 'none'}); fix the name to match the node's "
                "`queries` parameter, or remove the entry")
        origin = first_ns if self.time_base == "relative" else 0
        bag_end = last_ns + period_ns  # the last frame holds for one period
        resolved: dict[str, list[tuple[int, int]]] = {}
        for query, intervals in self.queries.items():
            spans = []
            for interval in intervals:
                start = origin + _ns(interval.start)
                end = bag_end if interval.end is None else origin + _ns(interval.end)
                if start < first_ns or start > last_ns or end > bag_end:
                    raise LabelsError(
                        f"{self.path}: {query!r} interval {interval.text()} lies outside the bag, whose frames "
                        f"span {self._span(first_ns, last_ns, origin)} ({self._unit()}); starts must fall on or "
                        f"between those times and ends at most one frame period ({period_ns / 1e9:g} s) after "
                        f"the last, or write `{END}`")
                spans.append((start, end))
            resolved[query] = spans
        return ResolvedLabels(self.path, resolved)

    def _span(self, first_ns: int, last_ns: int, origin: int) -> str:
        return f"{(first_ns - origin) / 1e9:.3f} to {(last_ns - origin) / 1e9:.3f} s"

    def _unit(self) -> str:
        return ("seconds from the first frame" if self.time_base == "relative"
                else "header stamps in seconds since the epoch")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"{key!r} on lines {first_line} and {line}")
        self.key, self.first_line, self.line = key, first_line, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping: plain YAML keeps the last, silently
    dropping a query's first intervals."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<` may override keys, by design
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in first_lines:
                    raise _DuplicateKey(key, first_lines[key], line)
                first_lines[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                continue
        return super().construct_mapping(node, deep)


def load_labels(path: Path) -> Labels:
    """Read and check a labels file on its own; raises LabelsError saying what to fix."""
    path = Path(path)
    try:
        document = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise LabelsError(f"cannot read labels {path}: {exc.strerror or exc}; pass an existing YAML file") from exc
    except _DuplicateKey as exc:
        raise LabelsError(f"{path}: {exc.key!r} is written twice in one mapping (lines {exc.first_line} and "
                          f"{exc.line}); write each key once, a query's intervals merged into one entry") from exc
    except yaml.YAMLError as exc:
        raise LabelsError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_labels(document, path)


def parse_labels(document: Any, path: Path) -> Labels:
    if not isinstance(document, dict) or not isinstance(document.get("queries"), dict):
        raise LabelsError(f"{path} needs a `queries:` mapping from each query to its present intervals, {_EXAMPLE}")
    extra = sorted(set(document) - {"time", "queries"})
    if extra:
        raise LabelsError(f"{path}: unknown key(s) {', '.join(map(str, extra))}; a labels file has `time` and "
                          "`queries` only")
    time_base = document.get("time", "relative")
    if time_base not in TIME_BASES:
        raise LabelsError(f"{path}: time: {time_base!r} is not one of {', '.join(TIME_BASES)} (relative: seconds "
                          "from the first frame; bag: header stamps in seconds)")
    queries: dict[str, list[Interval]] = {}
    for query, entries in document["queries"].items():
        if not isinstance(query, str) or not query.strip():
            raise LabelsError(f"{path}: query name {query!r} is not a phrase; name it as in the node's `queries`")
        queries[query] = _intervals(path, query, entries)
    return Labels(path, time_base, queries)


def _intervals(path: Path, query: str, entries: Any) -> list[Interval]:
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise LabelsError(f"{path}: {query!r} needs a list of [start, end] intervals (or [] for never), {_EXAMPLE}")
    intervals = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: {query!r} interval {number} ({entry!r})"
        if not isinstance(entry, list) or len(entry) != 2:
            raise LabelsError(f"{where} is not a [start, end] pair of seconds; write e.g. [2.0, 5.5] or [2.0, {END}]")
        start, end = entry
        if not _seconds(start) or not (_seconds(end) or end == END):
            raise LabelsError(f"{where}: start must be a number of seconds and end a number or `{END}`")
        interval = Interval(float(start), None if end == END else float(end))
        if interval.start < 0:
            raise LabelsError(f"{where} starts before 0; times are seconds, never negative")
        if interval.end is not None and interval.end <= interval.start:
            raise LabelsError(f"{where} ends before or where it starts; write [start, end] with start < end")
        intervals.append(interval)
    intervals.sort(key=lambda i: i.start)
    for before, after in zip(intervals, intervals[1:]):
        if before.end is None or before.end > after.start:
            raise LabelsError(f"{path}: {query!r} intervals {before.text()} and {after.text()} overlap; merge "
                              f"them into one")
    return intervals


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def dump_labels(time_base: str, queries: dict[str, list[tuple[float, Optional[float]]]]) -> str:
    """A labels file in the format above (what vlm_perception_sample_bag writes)."""
    lines = [f"time: {time_base}", "queries:"]
    for query, intervals in queries.items():
        body = ", ".join(f"[{start:g}, {END if end is None else f'{end:g}'}]" for start, end in intervals)
        lines.append(f"  {yaml.safe_dump(query, default_style=None).splitlines()[0]}: [{body}]")
    return "\n".join(lines) + "\n"
