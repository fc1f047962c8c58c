"""``train`` end to end on a tiny model and tiny data, into a temporary MLflow store."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.model.train import (
    TrainError,
    TrainResult,
    apply_overrides,
    ngram_training_rows,
    train,
    train_pointer,
    weighted_cross_entropy,
)
from pipelines.model.train_data import (
    length_buckets,
    replay_mix,
    replay_quotas,
    stratified_sample,
)
from pipelines.params import Params, TrainParams, load_params
from pipelines.settings import Settings
from tests.tiny_unigram import build_tiny_unigram_model

LABELS = ("negative", "neutral", "positive")
STEMS = {
    "negative": ["太差了", "气死我了", "退货退款太慢", "东西坏了没人管", "垃圾"],
    "neutral": ["请问什么时候发货", "怎么修改地址", "有没有优惠券", "能开发票吗", "在吗"],
    "positive": ["很好很满意", "谢谢客服", "物流很快", "质量不错", "下次还来"],
}
ENDINGS = ["", "!", "，亲", "。。。", " OK", "呢"]


def labelled_rows(prefix: str = "r", endings: Sequence[str] = ENDINGS) -> pd.DataFrame:
    rows = [
        {"text": stem + end, "label": label, "source": "test"}
        for label, stems in STEMS.items()
        for stem in stems
        for end in endings
    ]
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", [f"{prefix}{i:04d}" for i in range(len(frame))])
    return frame


def write_prepared(settings: Settings, frame: pd.DataFrame, content_hash: str = "h1") -> None:
    """Train / validation / test splits (every 5th row validation, every 5th+1 test)."""
    out = settings.prepared_dir
    out.mkdir(parents=True, exist_ok=True)
    position = np.arange(len(frame)) % 5
    frame[position >= 2].to_parquet(out / "train.parquet", index=False)
    frame[position == 0].to_parquet(out / "validation.parquet", index=False)
    frame[position == 1].to_parquet(out / "test.parquet", index=False)
    manifest = {"content_hash": content_hash, "interval_end": "2026-11-08T00:00:00+00:00"}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def tiny_params(base_model: Path, **train: object) -> Params:
    values = {
        "base_model": str(base_model),
        "max_length": 32,
        "batch_size": 8,
        "epochs": 8,
        "learning_rate": 1e-2,
        "freeze_embeddings": False,
        "frozen_layers": 0,  # the tiny model has 2 layers; params.yaml freezes more
        "log_every": 5,
        "eval_batch_size": 16,
        "precision": "fp32",  # params.yaml's `auto` would pick bf16 on a CPU that has it
    } | train
    return Params(
        labels=LABELS,
        ingest={"start": "2026-11-01", "end": "2026-11-08"},
        train=TrainParams.model_validate(values),
    )


def make_settings(root: Path) -> Settings:
    return Settings(var_dir=root / "var", data_dir=root / "data")


def runs_of(settings: Settings) -> pd.DataFrame:
    import mlflow

    from pipelines.tracking import configure_mlflow

    experiment_id = configure_mlflow(settings)
    return mlflow.search_runs(experiment_ids=[experiment_id])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = list(labelled_rows()["text"]) + list(labelled_rows("n", ["，好吗", "。"])["text"])
    return build_tiny_unigram_model(tmp_path_factory.mktemp("base") / "tiny", texts, LABELS)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, base_dir: Path
) -> tuple[Settings, TrainResult]:
    settings = make_settings(tmp_path_factory.mktemp("trained"))
    write_prepared(settings, labelled_rows())
    return settings, train(settings, tiny_params(base_dir))


def test_train_logs_a_run_and_a_loadable_pyfunc(trained: tuple[Settings, TrainResult]) -> None:
    import mlflow
    import mlflow.pyfunc

    settings, result = trained
    runs_of(settings)  # points MLflow at this test's store
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset.content_hash"] == "h1" == result.content_hash
    assert run.data.params["train.seed"] == "0"
    assert run.data.params["vocab.pruned"] == "True"
    assert run.data.tags["dataset_hash"] == "h1"
    client = mlflow.MlflowClient()
    history = client.get_metric_history(result.run_id, "val_macro_f1")
    assert [m.step for m in history] == list(range(1, 9))
    assert result.metrics["val_macro_f1"] == history[-1].value
    # The tiny classes differ by their words: eight epochs learn them (chance is 1/3; seeds
    # 0 to 2 all reach 1.0 here).
    assert result.metrics["val_accuracy"] > 0.8
    val_loss = [m.value for m in client.get_metric_history(result.run_id, "val_loss")]
    assert val_loss[-1] < 0.7 * val_loss[0]
    assert result.metrics["train_steps"] == 8 * np.ceil(54 / 8)
    artifacts = [a.path for a in client.list_artifacts(result.run_id, "data")]
    assert artifacts == ["data/train_ids.parquet"]
    # train.noise_filter is off: nothing filtered, nothing of it logged
    assert client.list_artifacts(result.run_id, "noise") == []
    assert not [k for k in run.data.metrics if k.startswith("noise")]
    assert "rows.noise_dropped" not in run.data.params

    # Served under ONNX Runtime: int8 when it loses under 0.5 points of validation accuracy
    # against the torch model (params.yaml), else fp32; the torch weights stay beside it.
    metrics = run.data.metrics
    assert metrics["val_accuracy_torch"] == result.metrics["val_accuracy"]
    assert abs(metrics["val_accuracy_onnx_fp32"] - metrics["val_accuracy_torch"]) < 1e-9
    int8_loss = metrics["val_accuracy_torch"] - metrics["val_accuracy_onnx_int8"]
    expected_runtime = "onnx-int8" if int8_loss < 0.005 else "onnx-fp32"
    if int8_loss >= 0.005:  # then the mixed form (feed-forward outputs fp32) was tried
        mixed_loss = metrics["val_accuracy_torch"] - metrics["val_accuracy_onnx_int8_mixed"]
        expected_runtime = "onnx-int8-mixed" if mixed_loss < 0.005 else "onnx-fp32"
    else:
        assert "val_accuracy_onnx_int8_mixed" not in metrics
    assert run.data.params["inference_runtime"] == expected_runtime
    # The n-gram model is shipped when the validation split gives it a share of the blend.
    weight = float(run.data.params["blend.transformer_weight"])
    served_metric = "val_accuracy_" + expected_runtime.replace("-", "_")
    assert metrics["val_transformer_accuracy"] == metrics[served_metric]
    model_files = {a.path for a in client.list_artifacts(result.run_id, "model/artifacts")}
    assert model_files == {
        "model/artifacts/hf_model",
        f"model/artifacts/model_{expected_runtime.removeprefix('onnx-').replace('-', '_')}.onnx",
    } | ({"model/artifacts/ngram_model"} if weight < 1 else set())

    model = mlflow.pyfunc.load_model(result.model_uri)
    assert model.model_config["runtime"] == expected_runtime
    assert model.model_config["blend_weight"] == weight
    # params.yaml's rule when the n-gram model is shipped; the transformer alone is not blended.
    rule = "log_linear" if weight < 1 else "linear"
    assert (model.model_config["blend_rule"], run.data.params["blend.rule"]) == (rule, rule)
    assert float(run.data.params["blend.sharpness"]) == model.model_config["blend_sharpness"]
    texts = ["客服态度很差!", "请问什么时候发货", "很好很满意"]
    out = model.predict(pd.DataFrame({"text": texts}))
    assert list(out.columns) == ["label", "score", "p_negative", "p_neutral", "p_positive"]
    proba = out[["p_negative", "p_neutral", "p_positive"]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)

    pointer = json.loads(train_pointer(settings).read_text(encoding="utf-8"))
    assert pointer["run_id"] == result.run_id and pointer["model_uri"] == result.model_uri
    assert pointer["data_interval"] == "bootstrap only, until 2026-11-08T00:00:00+00:00"


def test_same_seed_gives_the_same_validation_metrics(
    trained: tuple[Settings, TrainResult], base_dir: Path
) -> None:
    settings, first = trained
    again = train(settings, tiny_params(base_dir))
    assert again.run_id != first.run_id
    for name in ("val_accuracy", "val_macro_f1", "val_loss", "train_loss"):
        assert again.metrics[name] == first.metrics[name], name


def test_capped_rows_frozen_embeddings_and_fewer_layers(tmp_path: Path, base_dir: Path) -> None:
    import mlflow

    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows())
    params = tiny_params(
        base_dir, max_train_rows=12, freeze_embeddings=True, num_layers=1, epochs=0.5
    )
    result = train(settings, params)
    logged = mlflow.get_run(result.run_id).data.params
    assert logged["rows.train_rows"] == "12"
    assert logged["model.num_layers"] == "1"
    assert int(logged["model.frozen_parameters"]) > 0
    assert int(logged["model.trainable_parameters"]) < int(logged["model.parameters"])
    assert result.metrics["train_steps"] == 1  # half an epoch of 12 rows in batches of 8


def test_frozen_lower_layers_keep_their_weights(tmp_path: Path, base_dir: Path) -> None:
    import mlflow
    import torch
    from transformers import AutoModelForSequenceClassification

    from pipelines.model.modeling import copy_transformers_folder

    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows())
    result = train(settings, tiny_params(base_dir, frozen_layers=1, epochs=2))

    def load(folder: Path) -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)

    base = load(base_dir)
    tuned = load(copy_transformers_folder(result.model_uri, tmp_path / "tuned"))

    def layer(model: torch.nn.Module, index: int) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in model.bert.encoder.layer[index].state_dict().items()}

    # Saved as fp16: a frozen weight comes back as its fp16 rounding, a trained one moves more.
    def moved(index: int) -> float:
        before, after = layer(base, index), layer(tuned, index)
        return max(float((after[k] - before[k].half().float()).abs().max()) for k in before)

    assert moved(0) == 0.0
    assert moved(1) > 1e-3  # learning rate 1e-2, 2 epochs
    position = "bert.embeddings.position_embeddings.weight"
    assert torch.equal(
        tuned.state_dict()[position].float(), base.state_dict()[position].half().float()
    )
    embeddings = sum(p.numel() for p in tuned.bert.embeddings.parameters())  # pruned vocabulary
    first_layer = sum(p.numel() for p in base.bert.encoder.layer[0].parameters())
    logged = mlflow.get_run(result.run_id).data.params
    assert int(logged["model.frozen_parameters"]) == embeddings + first_layer
    assert logged["train.frozen_layers"] == "1"


def test_more_frozen_layers_than_the_model_keeps_is_rejected(
    tmp_path: Path, base_dir: Path
) -> None:
    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows())
    with pytest.raises(TrainError, match=r"frozen_layers=2 but the model keeps 1"):
        train(settings, tiny_params(base_dir, num_layers=1, frozen_layers=2))
    assert not train_pointer(settings).exists()


def test_bf16_autocast_trains_as_well_as_fp32(
    trained: tuple[Settings, TrainResult], base_dir: Path
) -> None:
    import mlflow

    settings, fp32 = trained
    bf16 = train(settings, tiny_params(base_dir, precision="bf16"))
    logged = mlflow.get_run(bf16.run_id).data.params
    assert (logged["train.precision"], logged["train.precision_effective"]) == ("bf16", "bf16")
    assert np.isfinite(bf16.metrics["train_loss"])
    # Same seed and batches, but bf16 products are not bit-equal: the run really used autocast.
    assert bf16.metrics["train_loss"] != fp32.metrics["train_loss"]
    assert bf16.metrics["val_accuracy"] >= min(0.8, fp32.metrics["val_accuracy"])


def test_empty_training_set_is_rejected_before_any_run(tmp_path: Path, base_dir: Path) -> None:
    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows().iloc[:0])
    with pytest.raises(ValueError, match="empty"):
        train(settings, tiny_params(base_dir))
    assert runs_of(settings).empty
    assert not train_pointer(settings).exists()


def test_single_class_is_rejected(tmp_path: Path, base_dir: Path) -> None:
    settings = make_settings(tmp_path)
    frame = labelled_rows()
    write_prepared(settings, frame[frame["label"] == "negative"])
    with pytest.raises(ValueError, match="single class"):
        train(settings, tiny_params(base_dir))
    assert runs_of(settings).empty


def test_unknown_label_is_rejected(tmp_path: Path, base_dir: Path) -> None:
    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows().replace({"label": {"neutral": "angry"}}))
    with pytest.raises(ValueError, match="angry"):
        train(settings, tiny_params(base_dir))


def test_missing_prepared_data_names_the_file(tmp_path: Path, base_dir: Path) -> None:
    settings = make_settings(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train\.parquet"):
        train(settings, tiny_params(base_dir))


def test_missing_base_model(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows())
    with pytest.raises(FileNotFoundError, match="base model not found"):
        train(settings, tiny_params(tmp_path / "no-such-model"))
    assert runs_of(settings).empty


def test_corrupted_checkpoint(tmp_path: Path, base_dir: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(base_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows())
    with pytest.raises(TrainError, match="cannot load the model checkpoint"):
        train(settings, tiny_params(broken))
    assert runs_of(settings).empty


def test_unreachable_tracking_store(
    tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.tracking import TrackingError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = Settings(
        var_dir=tmp_path / "var",
        data_dir=tmp_path / "data",
        mlflow_tracking_uri="http://127.0.0.1:9",
    )
    write_prepared(settings, labelled_rows())
    with pytest.raises(TrackingError, match=r"127\.0\.0\.1:9"):
        train(settings, tiny_params(base_dir))
    assert not train_pointer(settings).exists()


def test_failure_inside_the_run_marks_it_failed_and_writes_no_pointer(
    tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.model.modeling

    def broken_log(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pipelines.model.modeling, "log_classifier", broken_log)
    settings = make_settings(tmp_path)
    write_prepared(settings, labelled_rows())
    train_pointer(settings).parent.mkdir(parents=True)
    train_pointer(settings).write_text("{}")  # a stale pointer from an earlier run
    with pytest.raises(OSError, match="disk full"):
        train(settings, tiny_params(base_dir, epochs=0.2))
    runs = runs_of(settings)
    assert runs["status"].tolist() == ["FAILED"]
    assert not train_pointer(settings).exists()


def test_warm_start_from_the_champion_with_replay(
    trained: tuple[Settings, TrainResult], base_dir: Path
) -> None:
    import mlflow

    settings, first = trained
    runs_of(settings)
    client = mlflow.MlflowClient()
    name = settings.registered_model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, first.model_uri, run_id=first.run_id)
    client.set_registered_model_alias(name, "champion", version.version)

    frame = pd.concat([labelled_rows(), labelled_rows("n", ["，好吗", "。"])], ignore_index=True)
    write_prepared(settings, frame, content_hash="h2")
    result = train(settings, tiny_params(base_dir, warm_start=True, replay_fraction=0.5, epochs=1))
    logged = mlflow.get_run(result.run_id).data.params
    assert logged["warm_start.champion_version"] == str(version.version)
    assert logged["base_model.source"] == "champion"
    new_train = int((np.arange(len(frame)) % 5 >= 2)[len(labelled_rows()) :].sum())
    assert logged["rows.new_rows"] == str(new_train)
    assert logged["rows.seen_rows"] == "54"
    assert logged["rows.replay_rows"] == "27"
    assert logged["rows.train_rows"] == str(new_train + 27)
    assert result.content_hash == "h2"


# Each class writes with its own characters: the n-gram model of the noise filter tells them
# apart for sure. Rows 2, 33 and 64 are in the train split (position % 5 >= 2) and read as
# negative, neutral and positive; they are planted with another label.
NOISE_CHARS = {"negative": "差坏烂慢糟退", "neutral": "请问何时发址", "positive": "好棒赞快满意"}
NOISE_PLANTED = {  # id: (planted label, the class its text reads as)
    "r0002": ("positive", "negative"),
    "r0033": ("negative", "neutral"),
    "r0064": ("neutral", "positive"),
}


def test_noise_filter_drops_planted_mislabels_and_logs_them(tmp_path: Path) -> None:
    import itertools

    import mlflow

    rows = [
        {"text": a + b + a, "label": label, "source": "snownlp"}
        for label, chars in NOISE_CHARS.items()
        for a, b in itertools.permutations(chars, 2)
    ]
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", [f"r{i:04d}" for i in range(len(frame))])
    planted = frame["id"].isin(NOISE_PLANTED)
    frame.loc[planted, "label"] = [NOISE_PLANTED[i][0] for i in frame.loc[planted, "id"]]
    settings = make_settings(tmp_path)
    write_prepared(settings, frame)
    base = build_tiny_unigram_model(tmp_path / "tiny", list(frame["text"]), LABELS)
    params = tiny_params(
        base,
        epochs=0.5,
        ngram_blend=True,
        inference="torch",
        noise_filter=True,
        noise_min_confidence=0.8,  # the planted rows score about 0.85, the others under 0.5
        noise_max_drop_fraction=0.1,  # 54 training rows: up to 5 dropped
    )
    result = train(settings, params)

    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["noise.suspects"] == metrics["noise.dropped"] == 3
    for label in LABELS:
        assert metrics[f"noise.dropped_{label}"] == 1, label
    assert metrics["noise.dropped_source_snownlp"] == 3 and metrics["noise_filter_s"] > 0
    assert run.data.params["train.noise_filter"] == "True"
    logged = run.data.params
    assert (logged["rows.noise_dropped"], logged["rows.train_rows"]) == ("3", "51")
    assert logged["validation_rows"] == "18"  # validation rows are never filtered
    # The blend's n-gram model learns from the same labels: the 54 train-split rows less the 3.
    assert logged["blend.ngram_train_rows"] == "51"

    csv = client.download_artifacts(result.run_id, "noise/suspects.csv", str(tmp_path / "a"))
    report = pd.read_csv(csv, encoding="utf-8", dtype={"id": str})
    assert sorted(report["id"]) == sorted(NOISE_PLANTED)
    assert report["dropped"].tolist() == [True] * 3
    for row in report.itertuples():
        assert (row.label, row.predicted) == NOISE_PLANTED[row.id]
        assert row.text == frame.set_index("id").loc[row.id, "text"]  # Chinese survives the CSV
    ids = client.download_artifacts(result.run_id, "data/train_ids.parquet", str(tmp_path / "b"))
    train_ids = set(pd.read_parquet(ids)["id"])
    split_ids = set(frame.loc[np.arange(len(frame)) % 5 >= 2, "id"])
    assert train_ids == split_ids - set(NOISE_PLANTED)


def test_ngram_training_rows_leave_out_only_the_dropped_suspects() -> None:
    from pipelines.model.noise import NoiseFilterResult

    train = pd.DataFrame({"id": ["a", "b", "c", "d"], "text": list("wxyz"), "label": ["x"] * 4})
    report = pd.DataFrame({"id": ["c", "a"], "dropped": [True, False]})  # "a": a kept suspect
    noise = NoiseFilterResult(kept=train, report=report, counts={}, seconds=0.0)
    assert ngram_training_rows(train, noise)["id"].tolist() == ["a", "b", "d"]
    assert ngram_training_rows(train, None) is train
    nobody = NoiseFilterResult(train, report.iloc[:0], {}, 0.0)
    assert ngram_training_rows(train, nobody)["id"].tolist() == ["a", "b", "c", "d"]


def test_length_buckets_cover_every_row_once_with_similar_lengths() -> None:
    lengths = list(np.random.default_rng(1).integers(3, 200, size=103))
    batches = length_buckets(lengths, 8, np.random.default_rng(0), pool=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(103))
    assert all(len(b) <= 8 for b in batches)
    spread = np.mean([np.ptp(np.take(lengths, b)) for b in batches])
    random_spread = np.mean(
        [np.ptp(np.take(lengths, b)) for b in np.array_split(np.arange(103), 13)]
    )
    assert spread < random_spread / 2
    again = length_buckets(lengths, 8, np.random.default_rng(0), pool=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_stratified_sample_keeps_label_shares() -> None:
    frame = pd.DataFrame({"id": range(100), "label": ["a"] * 70 + ["b"] * 20 + ["c"] * 10})
    sample = stratified_sample(frame, 10, seed=0)
    assert len(sample) == 10
    assert sample["label"].value_counts().to_dict() == {"a": 7, "b": 2, "c": 1}
    assert stratified_sample(frame, 500, seed=0) is frame


def test_replay_mix_takes_new_rows_and_a_share_of_seen_ones() -> None:
    frame = pd.DataFrame({"id": [f"i{k}" for k in range(10)], "label": ["a", "b"] * 5})
    mixed, info = replay_mix(frame, {f"i{k}" for k in range(6)}, 0.5, seed=0)
    assert info == {"new_rows": 4, "replay_rows": 3, "seen_rows": 6}
    assert {"i6", "i7", "i8", "i9"} <= set(mixed["id"])
    assert len(mixed) == 7


@pytest.mark.parametrize(
    ("new", "seen", "replay_rows", "expected"),
    [
        # All rows: 14 negative, 10 positive; new + replay = 4 + 10 = 14 rows should hold
        # 14 x 14/24 = 8.17 negative (replay 4.17) and 14 x 10/24 = 5.83 positive (replay 5.83):
        # floors 4 + 5, the row left goes to the larger remainder (positive, 0.83).
        ({"negative": 4}, {"negative": 10, "positive": 10}, 10, {"negative": 4, "positive": 6}),
        # New rows beyond their class's share: that class replays none; the other wants
        # 16 x 12/22 = 8.73 but the replay holds 6 rows.
        ({"positive": 10}, {"negative": 10, "positive": 2}, 6, {"negative": 6, "positive": 0}),
        # Three classes, 20 rows of which 10 negative, 2 neutral, 8 positive; 1 + 10 = 11 rows
        # should hold 5.5, 1.1 and 4.4: replay 4.5, 1.1, 4.4 -> floors 4, 1, 4 and the tenth row
        # to the largest remainder (negative, 0.5).
        (
            {"negative": 1},
            {"negative": 9, "neutral": 2, "positive": 8},
            10,
            {"negative": 5, "neutral": 1, "positive": 4},
        ),
        # No new rows: the replay keeps the seen rows' mix (3 of 6 and 1 of 2 for 4 rows).
        ({}, {"negative": 6, "positive": 2}, 4, {"negative": 3, "positive": 1}),
    ],
)
def test_replay_quotas_restore_the_class_mix_of_all_rows(
    new: dict[str, int], seen: dict[str, int], replay_rows: int, expected: dict[str, int]
) -> None:
    assert replay_quotas(new, seen, replay_rows) == expected


def test_replay_mix_restoring_the_class_mix_replays_the_other_class() -> None:
    # 4 new negative rows and 10 + 10 seen: a stratified replay of 10 takes 5 + 5 (9 negative
    # of 14); restoring the mix takes 4 + 6 (8 of 14, as 14 of the 24 rows are negative).
    frame = pd.DataFrame(
        {
            "id": [f"s{k}" for k in range(20)] + [f"n{k}" for k in range(4)],
            "label": ["negative", "positive"] * 10 + ["negative"] * 4,
        }
    )
    seen = {f"s{k}" for k in range(20)}
    stratified, _ = replay_mix(frame, seen, 0.5, seed=0)
    restored, info = replay_mix(frame, seen, 0.5, seed=0, restore_class_mix=True)
    assert stratified["label"].value_counts().to_dict() == {"negative": 9, "positive": 5}
    assert restored["label"].value_counts().to_dict() == {"negative": 8, "positive": 6}
    assert info == {"new_rows": 4, "replay_rows": 10, "seen_rows": 20}
    assert {f"n{k}" for k in range(4)} <= set(restored["id"])
    assert restored["id"].is_unique


def test_replay_restoring_the_class_mix_counts_new_rows_by_their_weight() -> None:
    # The same 4 new negative rows, traffic weighted 0.5 each: they count as 2 rows. All rows
    # then weigh 12 negative and 10 positive; new + replay = 2 + 10 = 12 should hold
    # 12 x 12/22 = 6.55 negative (replay 4.55) and 12 x 10/22 = 5.45 positive: floors 4 + 5, the
    # row left to the larger remainder (negative, 0.55). Unweighted it is 4 + 6 (test above).
    frame = pd.DataFrame(
        {
            "id": [f"s{k}" for k in range(20)] + [f"n{k}" for k in range(4)],
            "label": ["negative", "positive"] * 10 + ["negative"] * 4,
            "weight": [1.0] * 20 + [0.5] * 4,
        }
    )
    seen = {f"s{k}" for k in range(20)}
    restored, info = replay_mix(frame, seen, 0.5, seed=0, restore_class_mix=True)
    assert restored["label"].value_counts().to_dict() == {"negative": 9, "positive": 5}
    assert info == {"new_rows": 4, "replay_rows": 10, "seen_rows": 20}
    assert restored.loc[restored["id"].str.startswith("n"), "weight"].tolist() == [0.5] * 4


def test_weighted_cross_entropy_is_the_weighted_mean_of_each_rows_loss() -> None:
    import torch

    # Row 0: equal logits, loss ln 3. Row 1: p(target) = 2 / (2 + 1 + 1) = 0.5, loss ln 2.
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    targets = torch.tensor([1, 0])
    loss = weighted_cross_entropy(logits, targets, torch.tensor([3.0, 1.0]))
    assert loss.item() == pytest.approx((3 * math.log(3) + math.log(2)) / 4)
    # Equal weights: torch's own mean loss; a row of weight 0 leaves the batch.
    equal = weighted_cross_entropy(logits, targets, torch.tensor([2.0, 2.0]))
    reference = torch.nn.functional.cross_entropy(logits, targets)
    assert equal.item() == pytest.approx(reference.item())
    assert weighted_cross_entropy(
        logits, targets, torch.tensor([0.0, 1.0])
    ).item() == pytest.approx(math.log(2))


def test_traffic_class_weighting_weights_the_loss_and_logs_the_weights(
    tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    import pipelines.model.train as train_module

    # Corpus rows of every class, and traffic (agents' labels) on "hotel" texts: 100 complaints
    # and 50 praise, of which the train split (every 5th+2..4 row) holds 60 and 30. The corpus's
    # classes are equal, so the hotel traffic is weighted 0.5 x 90 / 60 = 0.75 (negative) and
    # 0.5 x 90 / 30 = 1.5 (positive); corpus rows weigh 1.
    corpus = labelled_rows().assign(source="snownlp")
    hotel = pd.DataFrame(
        {
            "id": [f"h{i:03d}" for i in range(150)],
            "text": [f"酒店房间太脏了{i}" for i in range(100)]
            + [f"酒店房间很干净{i}" for i in range(50)],
            "label": ["negative"] * 100 + ["positive"] * 50,
            "source": "feedback",
        }
    )
    frame = pd.concat([corpus, hotel], ignore_index=True)
    settings = make_settings(tmp_path)
    write_prepared(settings, frame)
    train_split = frame[np.arange(len(frame)) % 5 >= 2]
    in_train = train_split[train_split["source"] == "feedback"]["label"].value_counts()
    assert in_train.to_dict() == {"negative": 60, "positive": 30}
    seen: list[float] = []
    original = train_module.weighted_cross_entropy

    def spy(logits: object, targets: object, row_weights: object) -> object:
        seen.extend(row_weights.tolist())  # type: ignore[attr-defined]
        return original(logits, targets, row_weights)

    monkeypatch.setattr(train_module, "weighted_cross_entropy", spy)
    params = tiny_params(base_dir, epochs=1, inference="torch", traffic_class_weighting=True)
    result = train(settings, params)
    run = mlflow.MlflowClient().get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["traffic_weight.hotel.negative"] == pytest.approx(0.75)
    assert metrics["traffic_weight.hotel.positive"] == pytest.approx(1.5)
    assert (metrics["traffic_rows.hotel.negative"], metrics["traffic_rows.hotel.positive"]) == (
        60,
        30,
    )
    assert run.data.params["train.traffic_class_weighting"] == "True"
    # One epoch: every training row's loss was weighted once, with its own weight.
    corpus_rows = len(train_split) - 90
    assert sorted(seen) == pytest.approx(sorted([0.75] * 60 + [1.0] * corpus_rows + [1.5] * 30))


def test_cli_overrides_are_validated() -> None:
    import argparse

    params = load_params()
    args = argparse.Namespace(
        max_train_rows=100,
        base_model="x",
        epochs=None,
        num_layers=None,
        frozen_layers=None,
        warm_start=None,
    )
    changed = apply_overrides(params, args)
    assert (changed.train.max_train_rows, changed.train.base_model) == (100, "x")
    assert changed.train.seed == params.train.seed
    with pytest.raises(ValueError, match="max_train_rows"):
        apply_overrides(params, argparse.Namespace(**{**vars(args), "max_train_rows": 0}))


def test_cli_trains_a_headless_wordpiece_model_and_prints_the_pointer(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """params.yaml values with CLI overrides; the base model has no head (like e5-small)."""
    import mlflow

    from pipelines.cli import main
    from tests.tiny_model import build_tiny_model

    frame = labelled_rows()
    base = build_tiny_model(tmp_path / "wordpiece", frame["text"])
    write_prepared(settings, frame)
    args = ["train", "--base-model", str(base), "--max-train-rows", "9", "--epochs", "1"]
    args += ["--frozen-layers", "1"]  # of its 2 layers; params.yaml freezes 6
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(train_pointer(settings).read_text(encoding="utf-8"))
    assert printed["model_uri"].startswith("models:/")
    logged = mlflow.get_run(printed["run_id"]).data.params
    assert logged["vocab.pruned"] == "False"  # WordPiece: kept as it is
    assert logged["rows.train_rows"] == "9"
    assert logged["train.frozen_layers"] == "1"
    out = mlflow.pyfunc.load_model(printed["model_uri"]).predict(pd.DataFrame({"text": ["在吗"]}))
    assert out["label"].iloc[0] in LABELS


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(tmp_path: Path) -> None:
    from pipelines.model.train import effective_precision, native_bf16

    epyc = tmp_path / "cpuinfo-avx2"
    epyc.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    sapphire = tmp_path / "cpuinfo-amx"
    sapphire.write_text("processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert native_bf16(epyc) is False and native_bf16(sapphire) is True
    assert native_bf16(tmp_path / "missing") is False
    assert effective_precision("auto", native=False) == "fp32"
    assert effective_precision("auto", native=True) == "bf16"
    assert effective_precision("bf16", native=False) == "bf16"  # an explicit choice is kept
    assert effective_precision("fp32", native=True) == "fp32"
