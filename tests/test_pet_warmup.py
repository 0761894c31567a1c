"""PET's warm-up task: the teacher's 4-class token labels and the probability mapping."""
from __future__ import annotations

import math

import torch

from slimformer.distill.warmup import (HEAD, PetWarmup, attach_head, detach_head, mapped_probs, mapping_loss,
                                       warmup_labels)


def _logits_for(probs: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly the given rows (one sequence)."""
    return torch.tensor(probs).log().unsqueeze(0)


def test_labels_on_a_hand_made_batch():
    # vocabulary of 3; gold tokens per position; the teacher's distribution per position
    rows = [[0.95, 0.03, 0.02],  # gold 0, predicted 0 at 0.95      -> confidently correct (0)
            [0.60, 0.30, 0.10],  # gold 0, predicted 0 at 0.60      -> correct but unsure (1)
            [0.80, 0.15, 0.05],  # gold 1, predicted 0 at 0.80      -> confidently wrong (2)
            [0.50, 0.40, 0.10],  # gold 2, predicted 0 at 0.50      -> wrong but unsure (3)
            [0.90, 0.05, 0.05],  # gold 0 at exactly 0.9            -> confidently correct (0)
            [0.70, 0.20, 0.10],  # gold 1, predicted 0 at exactly 0.7 -> confidently wrong (2)
            [0.34, 0.33, 0.33]]  # padding                          -> -100
    gold = torch.tensor([[0, 0, 1, 2, 0, 1, -100]])
    got = warmup_labels(_logits_for(rows), gold)
    assert got.tolist() == [[0, 1, 2, 3, 0, 2, -100]]
    # thresholds are configurable: with 0.5 / 0.9 the second row is confident, the third unsure
    got = warmup_labels(_logits_for(rows), gold, correct_threshold=0.5, wrong_threshold=0.9)
    assert got.tolist() == [[0, 0, 3, 3, 0, 3, -100]]


def test_mapping_probabilities_sum_to_one_and_match_a_hand_computation():
    probs = [[0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.25, 0.25, 0.5]]
    gold = torch.tensor([[1, 1, 0]])
    got = mapped_probs(_logits_for(probs), gold)[0]
    for row, g_idx, out in zip(probs, gold[0].tolist(), got):
        m, g = max(row), row[g_idx]
        want = torch.tensor([m * g, (1 - m) * g, m * (1 - g), (1 - m) * (1 - g)])
        torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(3), atol=1e-6, rtol=0)
    # m = 0.5, g = 0.3: the probabilities are 0.15, 0.15, 0.35, 0.35
    torch.testing.assert_close(got[0], torch.tensor([0.15, 0.15, 0.35, 0.35]), atol=1e-6, rtol=0)


def test_mapping_loss_is_the_nll_of_the_teacher_class_and_ignores_padding():
    probs = [[0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.25, 0.25, 0.5]]
    gold = torch.tensor([[1, 1, -100]])
    classes = torch.tensor([[2, 0, -100]])
    loss = mapping_loss(_logits_for(probs), classes, gold)
    want = -(math.log(0.5 * 0.7) + math.log(0.7 * 0.7)) / 2  # class 2: m*(1-g); class 0: m*g (m = g = 0.7)
    assert abs(float(loss) - want) < 1e-5
    # the loss trains: a gradient step raises the probability of the teacher's classes
    logits = _logits_for(probs).requires_grad_()
    mapping_loss(logits, classes, gold).backward()
    with torch.no_grad():
        assert float(mapping_loss(logits - 1.0 * logits.grad, classes, gold)) < float(loss)


def test_the_separate_head_variant_is_attached_for_training_and_removed_after(tmp_path):
    from families import inputs, tiny

    model = tiny("marian")
    attach_head(model, model.config.d_model, seed=0)
    batch = inputs(model, seq=6)
    out = model(**batch, output_hidden_states=True)
    assert out[HEAD].shape == (*batch["decoder_input_ids"].shape, 4)
    detach_head(model)
    assert not hasattr(model, HEAD) and HEAD not in dict(model(**batch))
    assert PetWarmup().head == "mapping" and PetWarmup(head="linear").correct_threshold == 0.9
