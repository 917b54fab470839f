"""Labels files, scoring against them, and the report's --labels/--junit/--min-f1 (no ROS node needed)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_report import FRAMES, PERIOD_NS, T0_NS, write_bag

from vlm_perception.bag import report
from vlm_perception.bag.labels import dump_labels, load_labels
from vlm_perception.bag.labels import ResolvedLabels
from vlm_perception.bag.scoring import ScoredOutput, failed, junit_xml, render_scores, score
from vlm_perception.core.errors import LabelsError

FRAME_ID = "camera_color_optical_frame"
LAST_NS = T0_NS + (FRAMES - 1) * PERIOD_NS
# The recorded run of test_report: frames 0..10, outputs from frame 1 on, apple said present on
# frames 4-7, banana on 1, 2, 9, 10. These labels put the apple on frames 3-6 (one miss, one false
# alarm) and the banana exactly where it was said.
LABELS = """\
queries:
  apple:
    - [0.3, 0.7]
  banana:
    - [0.9, end]
    - [0.1, 0.3]
"""


def write(tmp_path: Path, text: str, name: str = "labels.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def run_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bag(tmp_path_factory.mktemp("bags") / "run")


def resolve(path: Path, queries=("apple", "banana")):
    return load_labels(path).resolve(queries, T0_NS, LAST_NS, PERIOD_NS)


# --- labels ------------------------------------------------------------------------------


def test_labels_resolve_to_half_open_stamp_intervals(tmp_path):
    labels = resolve(write(tmp_path, LABELS))
    assert labels.intervals == {
        "apple": [(T0_NS + 3 * PERIOD_NS, T0_NS + 7 * PERIOD_NS)],
        "banana": [(T0_NS + PERIOD_NS, T0_NS + 3 * PERIOD_NS), (T0_NS + 9 * PERIOD_NS, LAST_NS + PERIOD_NS)]}
    assert [f for f in range(FRAMES) if labels.present("apple", T0_NS + f * PERIOD_NS)] == [3, 4, 5, 6]
    # Bag time: header stamps in seconds since the epoch, the same intervals.
    bag_time = write(tmp_path, "time: bag\nqueries:\n  apple: [[1700000000.3, 1700000000.7]]\n  banana: []\n",
                     "bag.yaml")
    assert resolve(bag_time).intervals == {"apple": labels.intervals["apple"], "banana": []}


def test_labels_written_by_dump_read_back(tmp_path):
    text = dump_labels("relative", {"cup of coffee": [(0.5, 2.0), (3.0, None)], "cat": []})
    labels = load_labels(write(tmp_path, text))
    assert labels.time_base == "relative"
    assert {q: [(i.start, i.end) for i in v] for q, v in labels.queries.items()} == {
        "cup of coffee": [(0.5, 2.0), (3.0, None)], "cat": []}


@pytest.mark.parametrize("text, message", [
    ("- cat\n", "needs a `queries:` mapping"),
    ("queries:\n  cat: [[0, 1]]\nobjects: {}\n", "unknown key(s) objects"),
    ("time: wall\nqueries:\n  cat: []\n", "time: 'wall' is not one of relative, bag"),
    ("queries:\n  cat: [0, 1]\n", "'cat' interval 1 (0) is not a [start, end] pair"),
    ("queries:\n  cat: [[0, 1, 2]]\n", "is not a [start, end] pair"),
    ("queries:\n  cat: 3\n", "'cat' needs a list of [start, end] intervals"),
    ("queries:\n  cat: [[zero, 1]]\n", "start must be a number of seconds and end a number or `end`"),
    ("queries:\n  cat: [[-1, 1]]\n", "starts before 0"),
    ("queries:\n  cat: [[2.0, 1.0]]\n", "'cat' interval 1 ([2.0, 1.0]) ends before or where it starts"),
    ("queries:\n  cat: [[1.0, 1.0]]\n", "ends before or where it starts"),
    ("queries:\n  cat: [[0.0, 0.5], [0.4, 0.8]]\n", "'cat' intervals [0, 0.5] and [0.4, 0.8] overlap; merge"),
    ("queries:\n  cat: [[0.6, end], [0.1, 0.2], [0.7, 0.8]]\n", "intervals [0.6, end] and [0.7, 0.8] overlap"),
    ("queries:\n  cat: [[0, 1]\n", "is not valid YAML"),
])
def test_each_malformed_labels_file_says_what_to_fix(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(LabelsError) as error:
        load_labels(path)
    assert message in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("queries:\n  cat: [[0.0, 2.0]]\n  cup: []\n  cat: [[5.0, end]]\n", "'cat' is written twice in one mapping "
     "(lines 2 and 4); write each key once, a query's intervals merged into one entry"),
    ("time: bag\nqueries:\n  cat: []\ntime: relative\n", "'time' is written twice in one mapping (lines 1 and 4)"),
    ("queries:\n  cat: [{a: 1, a: 2}]\n", "'a' is written twice in one mapping (lines 2 and 2)"),
])
def test_a_key_written_twice_is_refused_not_overwritten(tmp_path, text, message):
    # Plain YAML keeps the last duplicate, silently dropping the first entry's intervals.
    path = write(tmp_path, text)
    with pytest.raises(LabelsError) as error:
        load_labels(path)
    line, = str(error.value).splitlines()
    assert message in line and str(path) in line
    # A merge key (`<<`) may override what it merges, as YAML means it to.
    assert load_labels(write(tmp_path, "queries: {cat: []}\n<<: {time: bag}\ntime: relative\n", "m.yaml")) \
        .time_base == "relative"


@pytest.mark.parametrize("text, message", [
    ("queries:\n  dog: []\n  apple: []\n", "labels 'dog', which the run never evaluated (its queries: apple, banana)"),
    ("queries:\n  apple: [[1.05, end]]\n", "'apple' interval [1.05, end] lies outside the bag"),
    ("queries:\n  apple: [[0.5, 1.2]]\n", "frames span 0.000 to 1.000 s (seconds from the first frame)"),
    ("time: bag\nqueries:\n  apple: [[0.5, 1.0]]\n", "lies outside the bag, whose frames span 1700000000.000"),
])
def test_labels_that_do_not_fit_the_run_say_so(tmp_path, text, message):
    with pytest.raises(LabelsError) as error:
        resolve(write(tmp_path, text))
    assert message in str(error.value)
    # The last frame holds for one period: an end there is inside the bag.
    assert resolve(write(tmp_path, "queries:\n  apple: [[0.5, 1.1]]\n", "ok.yaml")).intervals["apple"]


def test_a_missing_labels_file_is_an_error(tmp_path):
    with pytest.raises(LabelsError, match="cannot read labels"):
        load_labels(tmp_path / "missing.yaml")


# --- scoring -----------------------------------------------------------------------------


def test_scores_match_hand_computed_figures(tmp_path):
    labels = resolve(write(tmp_path, "queries:\n  apple: [[0.2, 0.5]]\n  banana: []\n"))
    key = [(T0_NS + f * PERIOD_NS, FRAME_ID) for f in range(FRAMES)]
    said = [False, False, True, True, False, False, True, False]  # apple on frames 0..7
    outputs = [ScoredOutput(key[f], {"apple": s, "banana": False}, 10.0 * (f + 1)) for f, s in enumerate(said)]
    outputs.insert(3, ScoredOutput(key[2], {"apple": False}, 1.0))  # a second output of frame 2: not counted
    outputs.append(ScoredOutput((key[1][0], "other_frame"), {"apple": True}, 1.0))  # not a frame of the bag
    apple, banana = score(key, outputs, labels)
    # Truth on frames 2, 3, 4; said on 2, 3, 6: TP 2 (2, 3), FP 1 (6), FN 1 (4), TN 4 (0, 1, 5, 7).
    assert (apple.tp, apple.fp, apple.fn, apple.tn) == (2, 1, 1, 4)
    assert apple.precision == pytest.approx(2 / 3) and apple.recall == pytest.approx(2 / 3)
    assert apple.f1 == pytest.approx(2 / 3)
    assert (apple.evaluated, apple.frames) == (8, FRAMES)
    assert [outputs[i].key for i in apple.wrong] == [key[4], key[6]]
    assert apple.latency_p50_ms == pytest.approx(45.0) and apple.latency_p95_ms == pytest.approx(76.5)
    # Never there, never said: nothing to count, so every ratio is 1.0.
    assert (banana.tp, banana.fp, banana.fn, banana.tn) == (0, 0, 0, 8)
    assert banana.precision == banana.recall == banana.f1 == 1.0


def test_junit_xml_has_one_case_per_query_and_fails_below_the_threshold(tmp_path):
    labels = resolve(write(tmp_path, LABELS))
    key = [(T0_NS + f * PERIOD_NS, FRAME_ID) for f in range(FRAMES)]
    outputs = [ScoredOutput(key[f], {"apple": f in (4, 5, 6, 7), "banana": f in (1, 2, 9, 10)}, 40.0)
               for f in range(1, FRAMES)]
    scores = score(key, outputs, labels)
    suites = ET.fromstring(junit_xml(scores, 0.8, "suite"))
    suite, = suites
    assert (suites.get("tests"), suites.get("failures")) == ("2", "1")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("suite", "2", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"apple", "banana"}
    failure, = cases["apple"].iter("failure")
    assert failure.get("message") == "F1 0.750 is below --min-f1 0.8"
    assert "TP 3 FP 1 FN 1 TN 5" in failure.text and "10 of 11 frames evaluated" in failure.text
    assert not list(cases["banana"].iter("failure"))
    assert ET.fromstring(junit_xml(scores, None, "suite")).get("failures") == "0"


def test_a_query_never_evaluated_on_a_frame_of_the_bag_is_not_scored_as_perfect():
    key = [(T0_NS + f * PERIOD_NS, FRAME_ID) for f in range(FRAMES)]
    labels = ResolvedLabels(Path("labels.yaml"), {"apple": [], "cup": []})
    # cup only in the answer to a service call about its own request image: no frame of the bag.
    outputs = [ScoredOutput(k, {"apple": False}, 40.0) for k in key]
    outputs.append(ScoredOutput((key[5][0] + 1, FRAME_ID), {"cup": False}, 40.0))
    apple, cup = score(key, outputs, labels)
    assert (cup.evaluated, cup.frames) == (0, FRAMES) and apple.evaluated == FRAMES
    # A gate must not pass on nothing: any --min-f1 fails it, even 0; no gate, no failure.
    assert failed(cup, 0.0) and failed(cup, 0.9) and not failed(cup, None) and not failed(apple, 0.9)
    rows = {line.split()[0]: line.split()[1:] for line in render_scores([apple, cup], 0.9).splitlines()[1:]}
    assert rows["cup"] == ["-", "-", "not", "evaluated", "0", "0", "0", "0", "0/11", "-", "-", "FAIL"]
    assert rows["apple"][-1] == "ok"
    assert "not evaluated" in render_scores([cup], None) and "1.000" not in render_scores([cup], None)
    suites = ET.fromstring(junit_xml([apple, cup], 0.9, "suite"))
    assert suites.get("failures") == "1"
    cases = {case.get("name"): case for case in suites.iter("testcase")}
    failure, = cases["cup"].iter("failure")
    assert failure.get("message").startswith("the node never answered 'cup' on a frame of the bag (0 of 11")
    assert "standing queries" in failure.get("message") and "--record-namespace" in failure.get("message")
    assert not list(cases["apple"].iter("failure"))
    # Without --min-f1 nothing fails, but the case is skipped, not shown as passed.
    suite, = ET.fromstring(junit_xml([apple, cup], None, "suite"))
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "1")
    skipped, = suite.iter("skipped")
    assert skipped.get("message") == failure.get("message")


# --- the report --------------------------------------------------------------------------


def test_report_scores_marks_wrong_frames_and_gates_on_min_f1(run_bag, tmp_path, capsys):
    labels, out, junit = write(tmp_path, LABELS), tmp_path / "out", tmp_path / "ci" / "report.xml"
    code = report.main([str(run_bag), "--labels", str(labels), "--out", str(out), "--junit", str(junit),
                        "--min-f1", "0.8"])
    captured = capsys.readouterr()
    assert code == report.EXIT_BELOW_MIN_F1 == 3
    assert "F1 below 0.8 for apple" in captured.err
    rows = {line.split()[0]: line.split()[1:] for line in captured.out.splitlines()
            if line.startswith(("apple ", "banana "))}
    assert rows == {"apple": ["0.750", "0.750", "0.750", "3", "1", "1", "5", "10/11", "40.0", "40.0", "FAIL"],
                    "banana": ["1.000", "1.000", "1.000", "4", "0", "0", "6", "10/11", "40.0", "40.0", "ok"]}
    assert ET.parse(junit).getroot().get("failures") == "1"
    # Wrong: frame 3 (apple missed) and frame 7 (apple reported after it left); both on the sheet.
    run = report.load(run_bag)
    labels_resolved, scores = report.scores_against(run, labels)
    analysis = report.analyse(run, 12, report.wrong_outputs(scores))
    assert {(run.outputs[i].key[0] - T0_NS) // PERIOD_NS: q for i, q in analysis.wrong.items()} == {
        3: ["apple"], 7: ["apple"]}
    assert [(run.outputs[i].key[0] - T0_NS) // PERIOD_NS for i in analysis.tiles] == [1, 3, 4, 7, 8, 9]
    crimson = lambda image: ((image[..., 2] > 190) & (image[..., 1] < 50) & (image[..., 0] > 40)
                             & (image[..., 0] < 90)).sum()
    assert crimson(cv2.imread(str(out / "presence.png"))) > 50  # the crosses
    assert crimson(cv2.imread(str(out / "contact_sheet.png"))) > 1000  # frames and captions of wrong tiles

    assert report.main([str(run_bag), "--labels", str(labels), "--out", str(out), "--min-f1", "0.7"]) == 0
    assert "F1 >= 0.7" in capsys.readouterr().out


def test_report_gates_on_a_labelled_query_no_frame_of_the_bag_was_evaluated_for(tmp_path, capsys):
    bag = write_bag(tmp_path / "run", service_query="cup")
    labels = write(tmp_path, LABELS + "  cup: []\n")
    junit, out = tmp_path / "report.xml", tmp_path / "out"
    code = report.main([str(bag), "--labels", str(labels), "--out", str(out), "--junit", str(junit),
                        "--min-f1", "0.5"])
    captured = capsys.readouterr()
    assert code == report.EXIT_BELOW_MIN_F1
    row, = [line.split() for line in captured.out.splitlines() if line.startswith("cup ")]
    assert row == ["cup", "-", "-", "not", "evaluated", "0", "0", "0", "0", "0/11", "-", "-", "FAIL"]
    assert "never evaluated on a frame of the bag: cup" in captured.err and "F1 below" not in captured.err
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert [case for case in cases if list(cases[case].iter("failure"))] == ["cup"]
    # No gate asked for: done (exit 0), the query still shown as not evaluated and warned about.
    assert report.main([str(bag), "--labels", str(labels), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "not evaluated" in captured.out and "never evaluated on a frame of the bag: cup" in captured.err


def test_report_exit_codes_for_bad_labels_and_arguments(run_bag, tmp_path, capsys):
    bad = write(tmp_path, "queries:\n  dog: []\n")
    assert report.main([str(run_bag), "--labels", str(bad), "--out", str(tmp_path / "out")]) == 1
    line, = capsys.readouterr().err.splitlines()
    assert "'dog'" in line and "fix the name" in line
    for args in (["--junit", "x.xml"], ["--min-f1", "0.9"], ["--labels", str(bad), "--min-f1", "1.5"]):
        with pytest.raises(SystemExit) as exit_info:
            report.main([str(run_bag), *args])
        assert exit_info.value.code == 2
    assert "pass --labels" in capsys.readouterr().err
