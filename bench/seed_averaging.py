"""Does averaging several seeds help? Singles, their ensemble and their weight soup, on validation.

    python bench/seed_averaging.py [--seeds 0,1,2]

Trains ``train``'s model (``params.yaml``, the prepared splits of the last ``prepare``) once per
seed. Every run starts from the same weights (the classification head initialised from
``train.seed``, as ``train`` does); the seed sets the batch order and the dropout. Prints, on the
validation split, each run's accuracy and log loss, and after each further run those of the
ensemble (mean probabilities: inference cost x runs) and of the uniform weight soup (mean of the
trained weights: one model, inference cost x 1; Wortsman et al., 2022). The golden test split is
not read. Each run costs a full training (about 250 s on AMX, 700 s on AVX2).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2", help="batch-order and dropout seeds")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    import torch

    from pipelines.model.modeling import encode, predict_proba
    from pipelines.model.train import effective_precision, fit, proba_scores
    from pipelines.model.train_data import load_prepared
    from pipelines.model.train_setup import prepare_model
    from pipelines.params import load_params
    from pipelines.settings import get_settings

    settings, params = get_settings(), load_params()
    labels = list(params.labels)
    data = load_prepared(settings.prepared_dir, labels)
    texts = list(data.validation["text"])
    print(f"{len(data.train)} prepared training rows, {len(texts)} validation rows, seeds {seeds}")
    rows: list[tuple[str, dict[str, float]]] = []
    probas: list[np.ndarray] = []
    weights: list[dict[str, torch.Tensor]] = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="emoreg-seeds-") as tmp:
            setup = prepare_model(settings, params.train, labels, data, Path(tmp))
        model, tokenizer = setup.model, setup.tokenizer
        if seed == seeds[0]:  # the frame train fits: after train.max_train_rows, if set
            print(f"training on {len(setup.frame)} rows", flush=True)
        tp = setup.tp.model_copy(
            update={"precision": effective_precision(setup.tp.precision), "seed": seed}
        )
        torch.manual_seed(seed)
        ids = encode(tokenizer, list(setup.frame["text"]), tp.max_length)
        targets = [labels.index(v) for v in setup.frame["label"]]
        started = time.perf_counter()
        fit(model, ids, targets, tokenizer.pad_token_id, tp, lambda _e, loss: {"loss": loss})
        seconds = time.perf_counter() - started
        model.eval()
        probas.append(predict_proba(model, tokenizer, texts, tp.max_length, tp.eval_batch_size))
        rows.append(
            (f"seed {seed} ({seconds:.0f} s)", proba_scores(probas[-1], data.validation, labels))
        )
        weights.append(
            {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        )
        if len(weights) > 1:
            ensemble = np.mean(probas, axis=0)
            rows.append(
                (f"ensemble of {len(weights)}", proba_scores(ensemble, data.validation, labels))
            )
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if parameter.requires_grad:
                        parameter.copy_(torch.stack([w[name] for w in weights]).mean(0))
            soup = predict_proba(model, tokenizer, texts, tp.max_length, tp.eval_batch_size)
            rows.append((f"soup of {len(weights)}", proba_scores(soup, data.validation, labels)))
        print(f"  {rows[-1][0]} done", flush=True)
        del model

    print("\n| model | validation accuracy | macro-F1 | log loss |\n|---|---|---|---|")
    for name, scores in rows:
        accuracy, macro_f1, loss = scores["accuracy"], scores["macro_f1"], scores["loss"]
        print(f"| {name} | {accuracy:.4f} | {macro_f1:.4f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
