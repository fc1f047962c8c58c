"""prepare's partition inputs: labelled agent turns are counted when dropped, and a damaged
``validated.parquet`` is a clear error naming its path (as validate names a damaged raw.parquet)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.data.prepare import prepare_dataset
from pipelines.partitions import Interval, partition_dir
from pipelines.settings import Settings
from tests.data.test_prepare import (
    END,
    corpus_rows,
    make_params,
    manifest,
    message,
    read_splits,
    write_corpus,
    write_partition,
)


def test_labelled_agent_turns_are_dropped_and_counted(settings: Settings) -> None:
    write_corpus(settings, corpus_rows(5))
    write_partition(
        settings,
        "2026-11-03",
        "2026-11-04",
        [
            message("顾客说耳机坏了很生气", "negative", "customer_correction"),
            message("客服回复抱歉给您添麻烦", "negative", "agent_correction", role="agent"),
            message("客服回复感谢您的支持", "positive", "customer_correction", role="agent"),
            message("客服回复请稍等马上查询", role="agent"),  # unlabelled: nothing to count
            message("顾客问什么时候发货", predicted="neutral", score=0.99),
        ],
    )
    write_partition(
        settings,
        "2026-11-05",
        "2026-11-06",
        [
            message("客服回复已经为您补发", "neutral", "agent_correction", role="agent"),
            message("顾客说收到了很满意", "positive", "agent_correction"),
        ],
    )

    prepare_dataset(settings, make_params(), interval_end=END)

    inputs = manifest(settings)["inputs"]
    # Counted by hand above: two labelled agent turns in the first partition, one in the second.
    assert [p["agent_labelled_dropped"] for p in inputs["partitions"]] == [2, 1]
    assert inputs["agent_labelled_dropped"] == 3
    assert [p["human_labelled"] for p in inputs["partitions"]] == [1, 1]
    feedback = pd.concat([*read_splits(settings).values()]).query("source == 'feedback'")
    assert set(feedback["text"]) == {"顾客说耳机坏了很生气", "顾客说收到了很满意"}


def test_no_labelled_agent_turns_counts_zero(settings: Settings) -> None:
    write_corpus(settings, corpus_rows(5))
    write_partition(
        settings,
        "2026-11-03",
        "2026-11-04",
        [message("顾客说耳机坏了很生气", "negative", "customer_correction")],
    )
    prepare_dataset(settings, make_params(), interval_end=END)
    inputs = manifest(settings)["inputs"]
    assert inputs["partitions"][0]["agent_labelled_dropped"] == 0
    assert inputs["agent_labelled_dropped"] == 0


def test_a_damaged_partition_is_named_and_the_previous_dataset_kept(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    write_corpus(settings, corpus_rows(20))
    prepare_dataset(settings, make_params(), interval_end=END)
    before = {p: p.read_bytes() for p in settings.prepared_dir.iterdir()}
    damaged = (
        partition_dir(settings.partitions_dir, Interval.parse("2026-11-03", "2026-11-04"))
        / "validated.parquet"
    )
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"PAR1 not really parquet")

    with pytest.raises(ValueError) as caught:
        prepare_dataset(settings, make_params(), interval_end=END)
    message_ = str(caught.value)
    assert message_.startswith(f"cannot read {damaged} as parquet (")
    assert message_.endswith("); re-run validate for this interval")

    # The command line says the same in one line, without a traceback, and nothing is lost.
    assert main(["prepare", "--end", "2026-11-08"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {message_}"]
    assert {p: p.read_bytes() for p in settings.prepared_dir.iterdir()} == before
    assert damaged.read_bytes() == b"PAR1 not really parquet"  # left for inspection
