from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from pipelines.partitions import (
    Interval,
    dataset_interval,
    list_partitions,
    partition_dir,
    write_parquet,
)


def test_daily_key_reads_as_dates_and_round_trips():
    interval = Interval.parse("2026-11-01", "2026-11-02")
    assert interval.key == "interval=2026-11-01_2026-11-02"
    assert Interval.from_key(interval.key) == interval


def test_sub_daily_key_round_trips():
    interval = Interval.parse("2026-11-01T06:00:00", "2026-11-01T12:30:00")
    assert interval.key == "interval=2026-11-01T06-00-00_2026-11-01T12-30-00"
    assert Interval.from_key(interval.key) == interval


def test_bounds_are_converted_to_utc():
    shanghai = timezone(timedelta(hours=8))
    interval = Interval(
        datetime(2026, 11, 2, 8, tzinfo=shanghai), datetime(2026, 11, 3, 8, tzinfo=shanghai)
    )
    assert Interval.parse(interval.start, interval.end).start == datetime(2026, 11, 2, tzinfo=UTC)


@pytest.mark.parametrize("key", ["interval=2026-11-01", "2026-11-01_2026-11-02", "interval=x_y"])
def test_bad_keys_are_rejected(key):
    with pytest.raises(ValueError, match="partition key"):
        Interval.from_key(key)


def test_bad_dates_are_rejected():
    with pytest.raises(ValueError, match="ISO"):
        Interval.parse("yesterday", "2026-11-02")


def test_list_partitions_is_ordered_and_ignores_strangers(tmp_path):
    later = Interval.parse("2026-11-02", "2026-11-03")
    earlier = Interval.parse("2026-11-01", "2026-11-02")
    for interval in (later, earlier):
        partition_dir(tmp_path, interval).mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    assert [interval for interval, _ in list_partitions(tmp_path)] == [earlier, later]


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    target = tmp_path / "out.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), target)
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's error type is an implementation detail
        write_parquet(pd.DataFrame({"a": [object()]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_dataset_interval_from_prepare_manifest():
    manifest = {
        "interval_end": "2026-11-08T00:00:00+00:00",
        "inputs": {"partitions": [
            {"key": "interval=2026-11-02_2026-11-03"},
            {"key": "interval=2026-11-01T00-00-00_2026-11-02T00-00-00"},
        ]},
    }  # fmt: skip
    assert dataset_interval(manifest) == "[2026-11-01T00:00:00+00:00, 2026-11-08T00:00:00+00:00)"
    manifest["inputs"]["partitions"] = []
    assert dataset_interval(manifest) == "bootstrap only, until 2026-11-08T00:00:00+00:00"
    assert dataset_interval({}) is None
