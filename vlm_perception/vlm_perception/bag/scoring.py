"""Presence answers scored against labels: confusion counts, precision, recall, F1, latency; JUnit XML.

Each frame counts once per query: the first output about that frame (matched
by header stamp and frame_id) that holds the query. A ratio with nothing to
count (precision with no frame answered present, recall with no frame
labelled present) is 1.0, so a query whose object is never there and never
reported scores F1 1.0. A labelled query evaluated on no frame of the bag has
no score at all: it shows as "not evaluated", and fails any --min-f1 gate.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from .labels import ResolvedLabels

FrameKey = tuple[int, str]  # (header stamp in ns, frame_id)


@dataclass(frozen=True)
class ScoredOutput:
    """What scoring needs of one ~/presence output."""

    key: FrameKey
    present: Mapping[str, bool]  # by query
    inference_ms: float


@dataclass(frozen=True)
class QueryScore:
    query: str
    tp: int
    fp: int
    fn: int
    tn: int
    frames: int  # frames in the bag
    latency_p50_ms: float
    latency_p95_ms: float
    wrong: list[int] = field(default_factory=list)  # indices of the scored outputs that were wrong

    @property
    def evaluated(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _ratio(part: int, whole: int) -> float:
    return 1.0 if whole == 0 else part / whole


def score(frames: Sequence[FrameKey], outputs: Sequence[ScoredOutput], labels: ResolvedLabels) -> list[QueryScore]:
    """One QueryScore per labelled query, in the labels' order."""
    in_bag = set(frames)
    scores = []
    for query in labels.intervals:
        seen: set[FrameKey] = set()
        counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        wrong: list[int] = []
        latencies: list[float] = []
        for index, output in enumerate(outputs):
            if query not in output.present or output.key in seen or output.key not in in_bag:
                continue
            seen.add(output.key)
            said, truth = output.present[query], labels.present(query, output.key[0])
            counts[("t" if said == truth else "f") + ("p" if said else "n")] += 1
            if said != truth:
                wrong.append(index)
            latencies.append(output.inference_ms)
        p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"), float("nan"))
        scores.append(QueryScore(query, frames=len(in_bag), latency_p50_ms=float(p50),
                                 latency_p95_ms=float(p95), wrong=wrong, **counts))
    return scores


def render_scores(scores: Sequence[QueryScore], min_f1: Optional[float]) -> str:
    """A table: one row per query; FAIL marks a query below min_f1 or never evaluated."""
    header = ["query", "precision", "recall", "F1", "TP", "FP", "FN", "TN", "evaluated", "p50 ms", "p95 ms"]
    rows = [[s.query, *_ratio_cells(s), str(s.tp), str(s.fp), str(s.fn), str(s.tn), f"{s.evaluated}/{s.frames}",
             *_latency_cells(s)]
            + (["FAIL" if failed(s, min_f1) else "ok"] if min_f1 is not None else []) for s in scores]
    if min_f1 is not None:
        header.append(f"F1 >= {min_f1:g}")
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    return "\n".join("  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))])
                     .rstrip() for row in [header, *rows])


def _ratio_cells(s: QueryScore) -> list[str]:
    if s.evaluated == 0:  # not 1.000: nothing was counted
        return ["-", "-", "not evaluated"]
    return [f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}"]


def _latency_cells(s: QueryScore) -> list[str]:
    return ["-", "-"] if s.evaluated == 0 else [f"{s.latency_p50_ms:.1f}", f"{s.latency_p95_ms:.1f}"]


def failed(query_score: QueryScore, min_f1: Optional[float]) -> bool:
    # A gate must not pass on nothing: an unevaluated query's ratios of 1.0 count nothing.
    return min_f1 is not None and (query_score.evaluated == 0 or query_score.f1 < min_f1)


def _never_answered(query_score: QueryScore) -> str:
    return (f"the node never answered {query_score.query!r} on a frame of the bag (0 of {query_score.frames} "
            "frames evaluated); check that it is one of the node's standing queries and that "
            "--record-namespace named the node when recording")


def junit_xml(scores: Sequence[QueryScore], min_f1: Optional[float], suite: str) -> str:
    """JUnit XML: one test case per query, a failure where F1 is below min_f1 or the query was never evaluated
    (none without min_f1: there an unevaluated query is skipped, not passed)."""
    failures = sum(failed(s, min_f1) for s in scores)
    skipped = sum(s.evaluated == 0 and not failed(s, min_f1) for s in scores)
    suites = ET.Element("testsuites", tests=str(len(scores)), failures=str(failures))
    element = ET.SubElement(suites, "testsuite", name=suite, tests=str(len(scores)), failures=str(failures),
                            errors="0", skipped=str(skipped))
    for s in scores:
        case = ET.SubElement(element, "testcase", classname=suite, name=s.query)
        summary = _never_answered(s) if s.evaluated == 0 else (
            f"F1 {s.f1:.3f}, precision {s.precision:.3f}, recall {s.recall:.3f}; TP {s.tp} FP {s.fp} "
            f"FN {s.fn} TN {s.tn}; {s.evaluated} of {s.frames} frames evaluated; inference p50 "
            f"{s.latency_p50_ms:.1f} ms, p95 {s.latency_p95_ms:.1f} ms")
        if s.evaluated == 0:
            ET.SubElement(case, "failure" if failed(s, min_f1) else "skipped", message=summary,
                          type="NotEvaluated").text = summary
        elif failed(s, min_f1):
            ET.SubElement(case, "failure", message=f"F1 {s.f1:.3f} is below --min-f1 {min_f1:g}",
                          type="F1BelowThreshold").text = summary
        ET.SubElement(case, "system-out").text = summary
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
