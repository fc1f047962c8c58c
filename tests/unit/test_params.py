"""params.yaml is the one source of the parameters' defaults; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipelines import params as params_module
from pipelines.params import (
    BootstrapParams,
    GateParams,
    IngestParams,
    Params,
    PrepareParams,
    TrainParams,
    load_params,
)

PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def project_yaml() -> dict[str, Any]:
    return yaml.safe_load(PROJECT_PARAMS.read_text(encoding="utf-8"))


def write(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


SECTION_CLASSES = [
    cls
    for cls in vars(params_module).values()
    if isinstance(cls, type) and issubclass(cls, params_module._Section) and hasattr(cls, "SECTION")
]


def test_every_section_of_params_yaml_is_modelled() -> None:
    assert {cls.SECTION for cls in SECTION_CLASSES} | {"labels", "ingest"} == set(project_yaml())


@pytest.mark.parametrize("cls", SECTION_CLASSES, ids=lambda c: c.SECTION)
def test_defaults_are_the_values_of_params_yaml(cls: type[BaseModel]) -> None:
    expected = project_yaml()[cls.SECTION]  # type: ignore[attr-defined]
    built = cls().model_dump(mode="json")  # every key left out
    assert built == expected
    # No default lives in the code: a literal default would be a second place to keep in step.
    assert all(field.is_required() for field in cls.model_fields.values())


def test_loading_params_yaml_gives_its_values() -> None:
    raw = project_yaml()
    loaded = load_params(PROJECT_PARAMS).model_dump(mode="json", by_alias=True)
    assert loaded == {**raw, "labels": list(raw["labels"])}


def test_a_section_left_out_or_partly_given_takes_params_yaml_values(tmp_path: Path) -> None:
    raw = project_yaml()
    given = {"labels": ["a", "b"], "ingest": raw["ingest"], "gate": {"min_macro_f1": 0.5}}
    params = load_params(write(tmp_path / "params.yaml", given))
    assert params.gate.min_macro_f1 == 0.5
    assert params.gate.min_negative_recall == raw["gate"]["min_negative_recall"]
    assert params.train.model_dump(mode="json") == raw["train"]
    assert params.bootstrap.neutral_count == raw["bootstrap"]["neutral_count"]
    # the same in code
    assert GateParams(regression_metrics={}).min_macro_f1 == raw["gate"]["min_macro_f1"]
    assert PrepareParams(window_days=3).max_chars == raw["prepare"]["max_chars"]
    assert Params(labels=("a", "b"), ingest=raw["ingest"]).train == TrainParams()


def test_an_unknown_section_is_an_error_naming_it_and_the_file(tmp_path: Path) -> None:
    raw = project_yaml()
    raw["trian"] = raw.pop("train")  # misspelt: it used to be ignored silently
    path = write(tmp_path / "params.yaml", raw)
    with pytest.raises(ValueError, match=r"unknown key `trian` in .*params\.yaml") as err:
        load_params(path)
    assert str(path) in str(err.value) and "train" in str(err.value)  # the known names


def test_an_unknown_key_in_a_section_is_an_error_naming_it_and_the_file(tmp_path: Path) -> None:
    raw = project_yaml()
    raw["train"]["learnig_rate"] = raw["train"].pop("learning_rate")
    path = write(tmp_path / "params.yaml", raw)
    with pytest.raises(ValueError, match=r"unknown key `train\.learnig_rate`") as err:
        load_params(path)
    assert str(path) in str(err.value) and "learning_rate" in str(err.value)
    with pytest.raises(ValueError, match="learnig_rate"):
        TrainParams.model_validate({"learnig_rate": 0.1})


def test_an_invalid_value_names_the_key_and_the_file(tmp_path: Path) -> None:
    raw = project_yaml()
    raw["prepare"]["validation_fraction"] = 1.5
    path = write(tmp_path / "params.yaml", raw)
    with pytest.raises(ValueError, match=r"`prepare\.validation_fraction` in .*params\.yaml"):
        load_params(path)


def test_labels_and_ingest_have_no_default(tmp_path: Path) -> None:
    raw = project_yaml()
    with pytest.raises(ValueError, match="`labels`"):
        load_params(write(tmp_path / "params.yaml", {"ingest": raw["ingest"]}))
    with pytest.raises(ValueError, match="end"):
        IngestParams.model_validate({"start": "2026-11-01"})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("noise_folds", 2, True),
        ("noise_folds", 1, False),
        ("noise_min_confidence", 0.51, True),
        ("noise_min_confidence", 1.0, True),
        ("noise_min_confidence", 0.5, False),  # another class at 0.5 may not be the top one
        ("noise_min_confidence", 1.01, False),
        ("noise_max_drop_fraction", 0.0, True),
        ("noise_max_drop_fraction", 0.99, True),
        ("noise_max_drop_fraction", 1.0, False),
        ("noise_max_drop_fraction", -0.01, False),
    ],
)
def test_noise_filter_bounds(key: str, value: float, valid: bool) -> None:
    if valid:
        assert getattr(TrainParams.model_validate({key: value}), key) == value
    else:
        with pytest.raises(ValueError, match=key):
            TrainParams.model_validate({key: value})


@pytest.mark.parametrize(("value", "valid"), [(1.0, True), (20.0, True), (0.99, False)])
def test_traffic_max_weight_is_at_least_one(value: float, valid: bool) -> None:
    if valid:
        assert TrainParams.model_validate({"traffic_max_weight": value}).traffic_max_weight == value
    else:
        with pytest.raises(ValueError, match="traffic_max_weight"):
            TrainParams.model_validate({"traffic_max_weight": value})


def test_the_noise_filter_is_off_by_default() -> None:
    assert TrainParams().noise_filter is False


def test_traffic_class_weighting_is_on_by_default() -> None:
    assert TrainParams().traffic_class_weighting is True
    assert TrainParams().traffic_max_weight == 5.0


def test_a_reserved_domain_is_a_known_shop_and_needs_reserved_templates() -> None:
    assert BootstrapParams().reserved_domain is None  # params.yaml: a random share
    assert BootstrapParams.model_validate({"reserved_domain": "hotel"}).reserved_domain == "hotel"
    with pytest.raises(ValueError, match="unknown domain 'food'"):
        BootstrapParams.model_validate({"reserved_domain": "food"})
    with pytest.raises(ValueError, match="reserved_domain needs reserved_fraction > 0"):
        BootstrapParams.model_validate({"reserved_domain": "books", "reserved_fraction": 0.0})
