"""The validate step and the ``messages`` suite on small built partitions."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.data import validate as step
from pipelines.data.suites import load_suite
from pipelines.data.validate import (
    QUARANTINE_FILE,
    REASON_COLUMN,
    REPORT_FILE,
    VALIDATED_FILE,
    Check,
    PartitionError,
    ValidationFailed,
    label_shares,
    quarantine_reasons,
    validate_partition,
)
from pipelines.settings import PROJECT_ROOT, Settings
from tests.data.fixtures.messages import INTERVAL, LABELS, make_messages, write_raw

SUITE = PROJECT_ROOT / "expectations" / "messages.json"


def run(directory: Path, labels: tuple[str, ...] = LABELS, suite: Path = SUITE) -> Any:
    return validate_partition(directory, labels=labels, suite_path=suite)


def read(directory: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(directory / name)


def report(directory: Path) -> dict[str, Any]:
    return json.loads((directory / REPORT_FILE).read_text(encoding="utf-8"))


def assert_nothing_lost(directory: Path) -> None:
    """validated ∪ quarantine == raw, row for row."""
    raw = read(directory, "raw.parquet")
    parts = [read(directory, QUARANTINE_FILE)]
    if (directory / VALIDATED_FILE).exists():
        parts.append(read(directory, VALIDATED_FILE))
    ids: Counter[str] = Counter()
    for part in parts:
        ids.update(part["message_id"].tolist())
    assert ids == Counter(raw["message_id"].tolist())
    assert sum(len(part) for part in parts) == len(raw)


def customers(frame: pd.DataFrame) -> pd.Index:
    return frame.index[frame["role"] == "customer"]


def labelled(frame: pd.DataFrame) -> pd.Index:
    return frame.index[frame["label"].notna()]


# --- passing batches -----------------------------------------------------------------------------


def test_clean_partition_is_validated_whole(tmp_path: Path) -> None:
    raw = make_messages(30)
    directory = write_raw(tmp_path, raw)

    outcome = run(directory)

    assert outcome.success and not outcome.empty
    assert outcome.counts == {"raw": 120, "validated": 120, "quarantined": 0}
    pd.testing.assert_frame_equal(read(directory, VALIDATED_FILE), raw)
    quarantine = read(directory, QUARANTINE_FILE)
    assert quarantine.empty and REASON_COLUMN in quarantine.columns
    content = report(directory)
    suite_size = len(load_suite(SUITE).expectations)
    assert len(content["expectations"]) == suite_size + 1  # + the class-balance check
    assert all(entry["success"] for entry in content["expectations"])
    assert {entry["table"] for entry in content["expectations"]} == {"messages", "label_shares"}
    assert content["counts"] == outcome.counts and content["labels"] == list(LABELS)


def test_a_few_bad_rows_are_quarantined_while_the_batch_passes(tmp_path: Path) -> None:
    raw = make_messages(150)  # 600 rows: one bad row each stays within mostly=0.99
    long_id, late_id, score_id, stale_id = raw.loc[[0, 2, 4, 5], "message_id"]
    raw.loc[0, "text"] = "太长" * 25_000  # a 50,000-character paste
    raw.loc[2, "created_at"] = INTERVAL.end.replace(tzinfo=None)  # the end is exclusive
    raw.loc[4, "predicted_score"] = 1.5
    # Three days old: row 5 (an agent's, no feedback) must not be; a late correction may.
    late_feedback = raw.index[raw["source"] == "feedback"][5]
    old = raw.index.isin([5, late_feedback])
    raw.loc[old, "created_at"] = raw.loc[old, "created_at"] - timedelta(days=3)
    directory = write_raw(tmp_path, raw)

    outcome = run(directory)

    assert outcome.success
    quarantine = read(directory, QUARANTINE_FILE).set_index("message_id")
    assert set(quarantine.index) == {long_id, late_id, score_id, stale_id}
    reasons = quarantine[REASON_COLUMN]
    assert "expect_column_value_lengths_to_be_between(text)" in reasons[long_id]
    assert reasons[late_id] == "expect_column_values_to_be_between(created_at)"
    assert "expect_column_values_to_be_between(predicted_score)" in reasons[score_id]
    assert reasons[stale_id] == (
        "expect_column_values_to_be_between(created_at) "
        "where source != 'feedback' and rating is null"
    )
    assert len(quarantine.loc[long_id, "text"]) == 50_000  # kept whole, nothing lost
    assert outcome.counts == {"raw": 600, "validated": 596, "quarantined": 4}
    assert_nothing_lost(directory)
    lengths = next(
        entry
        for entry in report(directory)["expectations"]
        if entry["type"] == "expect_column_value_lengths_to_be_between"
    )
    assert lengths["success"] and lengths["unexpected_count"] == 1
    (example,) = lengths["examples"]
    assert example["message_id"] == long_id and len(example["text"]) < 200


def test_labels_are_injected_at_run_time(tmp_path: Path) -> None:
    other = ("sad", "calm", "glad")
    directory = write_raw(tmp_path, make_messages(30, labels=other))

    assert run(directory, labels=other).success
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_in_set\(label\)"):
        run(directory, labels=LABELS)


def test_empty_partition_is_valid_and_says_so(tmp_path: Path) -> None:
    directory = write_raw(tmp_path, make_messages(3).iloc[0:0])

    outcome = run(directory)

    assert outcome.success and outcome.empty
    assert outcome.counts == {"raw": 0, "validated": 0, "quarantined": 0}
    validated = read(directory, VALIDATED_FILE)
    assert validated.empty and "message_id" in validated.columns
    content = report(directory)
    assert content["empty"] and any("no rows" in note for note in content["notes"])


def test_class_balance_waits_for_enough_labelled_rows(tmp_path: Path) -> None:
    raw = make_messages(20)  # 32 labelled rows, under the suite's 50
    raw.loc[labelled(raw), "label"] = "negative"
    directory = write_raw(tmp_path, raw)

    assert run(directory).success
    (shares,) = [e for e in report(directory)["expectations"] if e["table"] == "label_shares"]
    assert shares["success"] and shares["unexpected_count"] == 0


def test_warning_severity_reports_without_failing_or_quarantining(tmp_path: Path) -> None:
    suite = {
        "name": "lenient",
        "expectations": [
            {
                "type": "expect_column_values_to_be_in_set",
                "kwargs": {"column": "role", "value_set": ["customer"]},
                "meta": {"why": "test"},
                "severity": "warning",
            }
        ],
    }
    suite_file = tmp_path / "lenient.json"
    suite_file.write_text(json.dumps(suite), encoding="utf-8")
    directory = write_raw(tmp_path, make_messages(5))

    outcome = run(directory, suite=suite_file)

    assert outcome.success and outcome.counts["quarantined"] == 0
    (entry,) = report(directory)["expectations"]
    assert not entry["success"] and entry["severity"] == "warning" and entry["examples"]


# --- failing batches -----------------------------------------------------------------------------


def _bad_label(frame: pd.DataFrame) -> None:
    frame.loc[labelled(frame)[::5], "label"] = "angry"


def _empty_text(frame: pd.DataFrame) -> None:
    frame.loc[customers(frame)[:4], "text"] = ""


def _long_text(frame: pd.DataFrame) -> None:
    frame.loc[customers(frame)[:2], "text"] = "很" * 50_000


def _duplicate_id(frame: pd.DataFrame) -> None:
    frame.loc[[3], "message_id"] = frame.loc[[2], "message_id"].to_numpy()


def _class_imbalance(frame: pd.DataFrame) -> None:
    rows = labelled(frame)
    frame.loc[rows, "label"] = "negative"
    frame.loc[rows[:1], "label"] = "neutral"
    frame.loc[rows[1:3], "label"] = "positive"


def _heavy_duplicates(frame: pd.DataFrame) -> None:
    frame.loc[customers(frame)[::2], "text"] = "在吗？"


def _bad_rating(frame: pd.DataFrame) -> None:
    frame.loc[frame["rating"].notna().idxmax(), "rating"] = 0


def _wrong_type(frame: pd.DataFrame) -> None:
    frame["turn"] = frame["turn"].astype(str)


FAILURES: dict[str, tuple[Callable[[pd.DataFrame], None], str]] = {
    "bad label": (_bad_label, "expect_column_values_to_be_in_set(label)"),
    "empty text": (_empty_text, "expect_column_values_to_match_regex(text)"),
    "50k-character text": (_long_text, "expect_column_value_lengths_to_be_between(text)"),
    "duplicate ids": (_duplicate_id, "expect_column_values_to_be_unique(message_id)"),
    "class imbalance": (
        _class_imbalance,
        "expect_column_values_to_be_between(share) where labelled_rows >= 50 on label_shares",
    ),
    "heavy duplicates": (
        _heavy_duplicates,
        "expect_column_proportion_of_unique_values_to_be_between(text) where role == 'customer'",
    ),
    "rating out of range": (_bad_rating, "expect_column_values_to_be_between(rating)"),
    "wrong type": (_wrong_type, "expect_column_values_to_be_in_type_list(turn)"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failing_batch_is_quarantined_whole_and_reported(tmp_path: Path, case: str) -> None:
    breaks, expectation = FAILURES[case]
    raw = make_messages(40)  # 64 labelled rows: enough for the class-balance check
    breaks(raw)
    directory = write_raw(tmp_path, raw)

    with pytest.raises(ValidationFailed) as caught:
        run(directory)

    message = str(caught.value)
    assert expectation in message and "why:" in message
    outcome = caught.value.outcome
    assert not outcome.success and outcome.validated_path is None
    assert outcome.counts == {"raw": len(raw), "validated": 0, "quarantined": len(raw)}
    assert expectation in outcome.failed_expectations
    assert not (directory / VALIDATED_FILE).exists()
    quarantine = read(directory, QUARANTINE_FILE)
    assert len(quarantine) == len(raw)
    assert quarantine[REASON_COLUMN].str.startswith("batch failed: ").all()
    assert quarantine[REASON_COLUMN].str.contains(expectation, regex=False).all()
    assert_nothing_lost(directory)
    content = report(directory)
    assert not content["success"] and expectation in content["failed_expectations"]
    assert content["counts"] == {"raw": len(raw), "validated": 0, "quarantined": len(raw)}


def test_failure_message_shows_observed_expected_and_examples(tmp_path: Path) -> None:
    raw = make_messages(40)
    _class_imbalance(raw)
    directory = write_raw(tmp_path, raw)

    with pytest.raises(ValidationFailed) as caught:
        run(directory)

    message = str(caught.value)
    assert "min_value=0.02" in message and "max_value=0.9" in message
    assert "where labelled_rows >= 50" in message
    assert "label='neutral'" in message and "rows=1" in message  # an example row
    assert str(directory / QUARANTINE_FILE) in message


def test_rerun_overwrites_every_output(tmp_path: Path) -> None:
    good = make_messages(30)
    directory = write_raw(tmp_path, good)
    run(directory)
    assert (directory / VALIDATED_FILE).exists()

    bad = good.copy()
    _duplicate_id(bad)
    write_raw(tmp_path, bad)
    with pytest.raises(ValidationFailed):
        run(directory)
    assert not (directory / VALIDATED_FILE).exists()  # the stale file is gone
    assert len(read(directory, QUARANTINE_FILE)) == len(bad)

    write_raw(tmp_path, good)
    outcome = run(directory)
    assert outcome.success and read(directory, QUARANTINE_FILE).empty
    assert len(read(directory, VALIDATED_FILE)) == len(good)
    assert report(directory)["success"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["raw.parquet", VALIDATED_FILE, QUARANTINE_FILE, REPORT_FILE]
    )  # no temporary files left behind


# --- unusable input ------------------------------------------------------------------------------


def test_missing_raw_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / INTERVAL.key
    with pytest.raises(FileNotFoundError, match=r"no raw\.parquet in .*ingest"):
        run(directory)
    assert not directory.exists()


def test_corrupt_raw_is_a_clear_error_and_drops_stale_validated(tmp_path: Path) -> None:
    directory = write_raw(tmp_path, make_messages(3))
    run(directory)
    (directory / "raw.parquet").write_bytes(b"PAR1 not really parquet")

    with pytest.raises(PartitionError, match=r"cannot read .*raw\.parquet as parquet"):
        run(directory)
    assert not (directory / VALIDATED_FILE).exists()
    assert (directory / "raw.parquet").read_bytes().startswith(b"PAR1")  # left for inspection


def test_missing_columns_fail_with_their_names(tmp_path: Path) -> None:
    raw = make_messages(3).drop(columns=["label", "text"])
    directory = write_raw(tmp_path, raw)

    with pytest.raises(ValidationFailed, match=r"lacks columns label, text") as caught:
        run(directory)

    assert caught.value.outcome.counts["quarantined"] == len(raw)
    assert_nothing_lost(directory)


def test_malformed_suite_is_a_clear_error(tmp_path: Path) -> None:
    suite_file = tmp_path / "broken.json"
    suite_file.write_text('{"name": "broken", "expectations": [{"kwargs": {}}]}')
    directory = write_raw(tmp_path, make_messages(3))
    with pytest.raises(ValueError, match=r"expectation #1 needs a 'type'"):
        run(directory, suite=suite_file)
    with pytest.raises(FileNotFoundError, match="expectation suite not found"):
        run(directory, suite=tmp_path / "absent.json")


# --- pure parts ----------------------------------------------------------------------------------


def _flagging(*ids: str | None, severity: str = "critical") -> Check:
    return Check(
        table="messages",
        type="expect_x",
        kwargs={"column": "text"},
        why="",
        severity=severity,
        success=True,
        flagged=ids,
    )


def test_quarantine_reasons_by_id() -> None:
    ids = ["a", "b", "b", None]
    checks = [_flagging("b"), _flagging(None), _flagging("a", severity="warning")]

    assert quarantine_reasons(ids, checks, []) == [
        None,
        "expect_x(text)",
        "expect_x(text)",
        "expect_x(text)",
    ]
    failed = quarantine_reasons(ids, checks, ["expect_y(label)"])
    assert failed[0] == "batch failed: expect_y(label)"
    assert failed[1] == "batch failed: expect_y(label); expect_x(text)"


def test_label_shares_count_configured_labels_only() -> None:
    frame = pd.DataFrame({"label": ["negative", "negative", "angry", None, "positive"]})

    shares = label_shares(frame, LABELS).set_index("label")

    assert shares["rows"].to_dict() == {"negative": 2, "neutral": 0, "positive": 1}
    assert (shares["labelled_rows"] == 3).all()
    assert shares.loc["neutral", "share"] == 0.0
    assert shares["share"].sum() == pytest.approx(1.0)


def test_every_expectation_says_why() -> None:
    for path in (SUITE, SUITE.with_name("label_shares.json")):
        suite = load_suite(path)
        assert suite.expectations
        assert all(item.get("meta", {}).get("why") for item in suite.expectations), path


# --- command line --------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    step.configure_parser(parser)
    return step.run_cli(parser.parse_args(argv))


def test_cli_validates_the_interval_it_is_given(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_raw(settings.partitions_dir, make_messages(30))

    assert _cli("--start", "2026-11-01", "--end", "2026-11-02", "--suite", "messages") == 0
    assert "120 rows validated, 0 quarantined" in capsys.readouterr().out
    assert (directory / VALIDATED_FILE).exists()

    with pytest.raises(FileNotFoundError, match=r"no raw\.parquet"):
        _cli("--start", "2026-11-02", "--end", "2026-11-03")


def test_outcome_points_at_the_files_the_run_wrote(tmp_path: Path) -> None:
    raw = make_messages(30)
    directory = write_raw(tmp_path, raw)

    passed = run(directory)
    # The documented file names, written out here rather than taken from the module.
    assert passed.validated_path == directory / "validated.parquet"
    assert passed.quarantine_path == directory / "quarantine.parquet"
    assert passed.report_path == directory / "validation.json"
    pd.testing.assert_frame_equal(pd.read_parquet(passed.validated_path), raw)
    assert pd.read_parquet(passed.quarantine_path).empty
    assert json.loads(passed.report_path.read_text(encoding="utf-8"))["success"] is True

    _bad_rating(raw)
    write_raw(tmp_path, raw)
    with pytest.raises(ValidationFailed) as caught:
        run(directory)
    failed = caught.value.outcome
    assert failed.validated_path is None
    assert not (directory / "validated.parquet").exists()  # the stale one is gone
    assert len(pd.read_parquet(failed.quarantine_path)) == len(raw)


def test_cli_reports_a_failed_batch_without_a_traceback(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.cli import main

    raw = make_messages(30)
    _bad_rating(raw)
    write_raw(settings.partitions_dir, raw)

    assert main(["validate", "--start", "2026-11-01", "--end", "2026-11-02"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "expect_column_values_to_be_between(rating)" in err
