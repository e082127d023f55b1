"""The reasoner's counterfactual contract: region choice, random regions, inpainting; and
the acceptance check that GRPO's reward, GRPO's in-job evaluation and batch inference
(whose predictions the evaluation report's flip rates read) remove the same pixels."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from medray.contracts.counterfactual import (
    body_box,
    counterfactual_images,
    inpaint,
    random_boxes,
    roi_boxes,
    roi_region,
)
from medray.contracts.reasoner import parse_answer

pytestmark = pytest.mark.unit


def test_inpaint_changes_only_the_box_and_removes_its_structure():
    arr = np.zeros((100, 100, 3), dtype=np.uint8)
    arr[:, :] = 40
    arr[30:50, 30:50] = 250  # the "lesion"
    img = Image.fromarray(arr)
    out = np.asarray(inpaint(img, [(0.3, 0.3, 0.5, 0.5)]))
    assert out[35:45, 35:45].mean() < 60  # filled from the dark surroundings
    outside = np.ones((100, 100), dtype=bool)
    outside[30:50, 30:50] = False
    assert (out[outside] == arr[outside]).all()  # nothing outside the box changed


def test_random_boxes_same_size_deterministic_and_elsewhere():
    roi = [(0.1, 0.1, 0.4, 0.3)]
    a = random_boxes(roi, "slake:1", seed=0)
    assert a == random_boxes(roi, "slake:1", seed=0)
    assert a != random_boxes(roi, "slake:2", seed=0)
    (x1, y1, x2, y2) = a[0]
    assert x2 - x1 == pytest.approx(0.3) and y2 - y1 == pytest.approx(0.2)
    assert x1 >= 0 and x2 <= 1 and y1 >= 0 and y2 <= 1
    assert x1 >= 0.4 or x2 <= 0.1 or y1 >= 0.3 or y2 <= 0.1  # no overlap with the ROI


def test_roi_is_the_named_reference_box_else_the_predicted_one():
    organs = [
        {"label": "Lung", "x1": 0.1, "y1": 0.2, "x2": 0.4, "y2": 0.7},
        {"label": "Heart", "x1": 0.4, "y1": 0.4, "x2": 0.6, "y2": 0.6},
        {"label": "Lesion", "x1": 0.6, "y1": 0.3, "x2": 0.7, "y2": 0.4},
    ]
    row = {"question": "How many lesions are in this image?", "answer": "1", "boxes": organs}
    assert roi_boxes(row) == [(0.6, 0.3, 0.7, 0.4)]
    row2 = {"question": "Is this an MRI?", "answer": "no", "boxes": organs}
    assert roi_boxes(row2, predicted=[[0.2, 0.2, 0.3, 0.3]]) == [(0.2, 0.2, 0.3, 0.3)]
    assert roi_boxes(row2, predicted=[[0.2, 0.2, 0.3, 0.3]], source="reference") == []
    assert roi_boxes({"question": "q", "boxes": organs[:1]}) == [(0.1, 0.2, 0.4, 0.7)]


def test_each_region_of_interest_has_a_kind():
    boxes = [
        {"label": "Liver", "x1": 0.1, "y1": 0.2, "x2": 0.4, "y2": 0.7},
        {"label": "Left Kidney", "x1": 0.5, "y1": 0.5, "x2": 0.6, "y2": 0.6},
        {"label": "Liver Cancer", "x1": 0.2, "y1": 0.3, "x2": 0.3, "y2": 0.4},
    ]

    def kind(question, bxs=boxes, predicted=(), source="both"):
        return roi_region({"question": question, "answer": "", "boxes": bxs}, predicted, source)

    assert kind("Where is the kidney?") == ([(0.5, 0.5, 0.6, 0.6)], "named organ")
    # "liver" names the organ and the lesion: a chosen lesion makes it a lesion question
    assert kind("Does the liver look abnormal?")[1] == "named lesion"
    assert kind("Is there cancer?") == ([(0.2, 0.3, 0.3, 0.4)], "named lesion")
    assert kind("Is this a CT?", boxes[:1]) == ([(0.1, 0.2, 0.4, 0.7)], "only box")
    assert kind("Where is the liver?", boxes[:1])[1] == "only box"
    assert kind("Is this a CT?", predicted=[[0.1, 0.1, 0.2, 0.2]])[1] == "predicted"
    assert kind("Is this a CT?", [[0.3, 0.3, 0.5, 0.5]])[1] == "reference"  # bare coordinates
    assert kind("Is this a CT?") == ([], None)  # several boxes, none named, nothing predicted


def _body_image() -> Image.Image:
    """A grey body on a black background: x 0.25-0.75, y 0.125-0.875 of a 160 x 128 image."""
    arr = np.zeros((128, 160, 3), dtype=np.uint8)
    arr[16:112, 40:120] = 120
    return Image.fromarray(arr)


def test_the_body_box_is_the_foreground_and_random_regions_stay_inside_it():
    x1, y1, x2, y2 = body_box(_body_image())
    assert (x1, y1, x2, y2) == pytest.approx((0.25, 0.125, 0.75, 0.875), abs=0.02)
    assert body_box(Image.new("RGB", (50, 40))) == (0.0, 0.0, 1.0, 1.0)  # nothing stands out
    assert body_box(Image.new("RGB", (50, 40), (200, 200, 200))) == (0.0, 0.0, 1.0, 1.0)
    roi = [(0.3, 0.2, 0.4, 0.3)]
    for key in range(50):
        (a1, b1, a2, b2) = random_boxes(roi, f"k{key}", within=(x1, y1, x2, y2))[0]
        assert x1 <= a1 and a2 <= x2 and y1 <= b1 and b2 <= y2
    wide = [(0.0, 0.4, 0.9, 0.5)]  # wider than the body: placed across the whole width
    (a1, _, a2, _) = random_boxes(wide, "w", within=(x1, y1, x2, y2))[0]
    assert a1 >= 0.0 and a2 <= 1.0 and a2 - a1 == pytest.approx(0.9)
    # A body no larger than the region leaves no room beside it: anywhere on the image.
    (e1, f1, e2, f2) = random_boxes(roi, "tight", within=roi[0])[0]
    assert e2 <= 0.3 or e1 >= 0.4 or f2 <= 0.2 or f1 >= 0.3  # no overlap with the ROI
    row = {"sample_id": "s1", "question": "Where is the lesion?", "answer": "left",
           "boxes": [{"label": "Lesion", "x1": 0.3, "y1": 0.2, "x2": 0.4, "y2": 0.3}]}  # fmt: skip
    cf = counterfactual_images(_body_image(), row)
    assert cf.kind == "only box" and cf.roi == [(0.3, 0.2, 0.4, 0.3)]
    (c1, d1, c2, d2) = cf.random[0]
    assert x1 <= c1 and c2 <= x2 and y1 <= d1 and d2 <= y2
    # The control removes body pixels, not background: its inpainted area was grey.
    before = np.asarray(_body_image())
    changed = np.any(np.asarray(cf.random_image) != before, axis=2)
    assert changed.any() and before[changed].min() > 0


def test_inpaint_refuses_a_box_outside_the_image():
    img = Image.new("RGB", (20, 20))
    with pytest.raises(ValueError, match="inside"):
        inpaint(img, [(0.5, 0.5, 1.5, 0.6)])


def test_predicted_first_and_both_order_the_sources():
    ref = [{"label": "Lesion", "x1": 0.6, "y1": 0.4, "x2": 0.8, "y2": 0.6}]
    row = {"sample_id": "s", "question": "Is there a lesion?", "boxes": ref}
    pred = [[0.1, 0.1, 0.3, 0.3]]
    assert roi_boxes(row, pred, "both") == [(0.6, 0.4, 0.8, 0.6)]
    assert roi_boxes(row, pred, "predicted_first") == [(0.1, 0.1, 0.3, 0.3)]
    assert roi_boxes(row, [], "predicted_first") == [(0.6, 0.4, 0.8, 0.6)]
    assert roi_boxes(row, [], "predicted") == []
    with pytest.raises(ValueError, match="source"):
        roi_boxes(row, pred, "nowhere")
    with pytest.raises(ValueError, match="sample_id"):
        counterfactual_images(Image.new("RGB", (8, 8)), {**row, "sample_id": None}, pred)


ROW = {
    "sample_id": "slake:0012",
    "question": "Does the picture contain a lesion?",
    "answer": "yes",
    "answer_type": "closed",
    "boxes": [
        {"label": "Brain", "x1": 0.2, "y1": 0.1, "x2": 0.8, "y2": 0.9},
        {"label": "Lesion", "x1": 0.55, "y1": 0.4, "x2": 0.75, "y2": 0.6},
    ],
    "labels": [],
}
COMPLETION = json.dumps(
    {"caption": "MRI.", "reasoning": ["a"], "boxes": [[0.1, 0.1, 0.3, 0.35]], "answer": "yes"}
)


@pytest.fixture(scope="module")
def predictor():
    from medray.infer.predictor import VQAPredictor
    from medray.models import ensure_built

    ensure_built("tiny-qwen2-vl")
    return VQAPredictor([{"label": "base", "model": "tiny-qwen2-vl"}], max_new_tokens=4)


@pytest.mark.parametrize("source", ["predicted_first", "both", "reference"])
def test_grpo_reward_grpo_eval_and_batch_inference_inpaint_the_same_pixels(source, predictor):
    from medray.train import grpo_eval
    from medray.train.grpo import GRPOSettings, reward_functions
    from medray.train.rewards import RewardWeights

    noise = np.random.default_rng(5).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    png = buf.getvalue()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    seed = 7
    seen: dict[str, list[np.ndarray]] = {}

    def recorder(path):
        def reanswer(images, questions):
            seen[path] = [np.asarray(im) for im in images]
            return [COMPLETION] * len(images)

        return reanswer

    # 1. GRPO's counterfactual reward, called as trl calls it (dataset columns as lists).
    counterfactual = reward_functions(
        GRPOSettings(counterfactual_box=source),
        recorder("grpo_reward"),
        lambda texts: np.ones((len(texts), 4)),
        lambda: seed,
    )[3]
    counterfactual(
        [COMPLETION],
        image=[png],
        **{
            k: [ROW[k]]
            for k in ("sample_id", "question", "answer", "answer_type", "boxes", "labels")
        },
    )
    # 2. GRPO's in-job evaluation.
    grpo_eval.score_rows(
        [{**ROW, "image": image, "choices": None}],
        [COMPLETION],
        encode=lambda texts: np.ones((len(texts), 4)),
        reanswer=recorder("grpo_eval"),
        weights=RewardWeights(),
        box_source=source,
        seed=seed,
    )
    # 3. Batch inference's control answers (the columns the report's flip rates read).
    from medray.infer import predictor as P

    real_ask = predictor._ask

    def ask(entry, questions, images):
        seen["batch_infer"] = [np.asarray(im) for im in images]
        return real_ask(entry, questions, images)

    predictor._ask = ask
    predictor.counterfactual, predictor.roi_source, predictor.seed = True, source, seed
    try:
        pred_boxes = [list(b) for b in parse_answer(COMPLETION).value.boxes]
        preds = {0: {"pred_boxes": pred_boxes}}
        predictor._controls(predictor.entries[0], [ROW], [0], [image], preds)
    finally:
        del predictor._ask
    assert set(preds[0]) >= set(P.CF_COLUMNS)

    expected = counterfactual_images(image, ROW, pred_boxes, source=source, seed=seed)
    assert expected is not None
    for path in ("grpo_reward", "grpo_eval", "batch_infer"):
        assert len(seen[path]) == 2, path
        assert np.array_equal(seen[path][0], np.asarray(expected[2])), path  # ROI removed
        assert np.array_equal(seen[path][1], np.asarray(expected[3])), path  # random region
    assert not np.array_equal(np.asarray(expected[2]), np.asarray(image))
