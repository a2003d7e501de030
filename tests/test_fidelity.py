"""When a lens reading is unreliable and when a tuned lens has not converged
(harness/fidelity.py), on hand-made numbers."""

from __future__ import annotations

import numpy as np

from harness.fidelity import CONVERGENCE_DROP, KL_RATIO, OUTSIDE_BUCKET, last_half_change, lens_fidelity

L = 8


def _kl(early: float, late: float = 1.0) -> np.ndarray:
    return np.array([early] * 4 + [late] * 4 + [0.0])  # layers 0..L


def test_a_lens_far_above_the_tuned_lens_at_the_layers_read_is_unreliable():
    far = lens_fidelity("logit", [1, 2], _kl(16.0), 256, reference=_kl(4.0))
    assert far.held_out_kl == 16.0 and far.reference_kl == 4.0
    assert far.unreliable == [f"held-out KL 16.00 nats is 4.0x the tuned lens's 4.00 (more than {KL_RATIO:g}x)"]
    assert far.label.startswith("unreliable") and far.converged is None
    # the same lens read only at layers where it is close: fine
    assert lens_fidelity("logit", [5, 6], _kl(16.0), 256, reference=_kl(4.0)).unreliable == []
    # exactly at the ratio is not "more than"
    assert lens_fidelity("logit", [1], _kl(12.0), 256, reference=_kl(4.0)).unreliable == []
    assert lens_fidelity("logit", [1], _kl(16.0), 256).unreliable == []  # no tuned lens: no comparison


def test_a_lens_reading_rare_tokens_at_the_layers_read_is_unreliable():
    buckets = np.zeros((L + 1, 100), dtype=int)
    buckets[1:3, :95] = OUTSIDE_BUCKET  # 95% of the top-1 at layers 1-2 are outside the Top-1000
    rare = lens_fidelity("logit", [1, 2], _kl(2.0), 256, top1_buckets=buckets)
    assert rare.outside_top1000 == 0.95 and rare.unreliable == ["95% of its top-1 tokens are outside the Top-1000 bucket"]
    buckets[1:3, :90] = OUTSIDE_BUCKET
    buckets[1:3, 90:] = 0
    assert lens_fidelity("logit", [1, 2], _kl(2.0), 256, top1_buckets=buckets).unreliable == []  # 90%: not more than


def _curve(*mean_kls: float, tokens=(4096, 7168, 14336, 27648)) -> list[dict]:
    return [{"stage": "closed form", "tokens": t, "mean_kl": m} for t, m in zip(tokens, mean_kls)]


def test_a_tuned_lens_whose_kl_still_falls_over_the_last_half_has_not_converged():
    falling = _curve(5.0, 4.0, 3.5, 3.3)  # 3.5 at half the tokens -> 3.3: -5.7%
    assert abs(last_half_change(falling) - (3.3 - 3.5) / 3.5) < 1e-12
    fid = lens_fidelity("tuned", [1, 2], _kl(3.0), 256, training_tokens=27648, convergence=falling)
    assert fid.converged is False and "not converged (KL fell 5.7%" in fid.label
    flat = _curve(5.0, 4.0, 3.5, 3.5 * (1 - 0.99 * CONVERGENCE_DROP))  # just inside the allowed drop
    assert lens_fidelity("tuned", [1], _kl(3.0), 256, convergence=flat).converged is True
    rising = _curve(3.2, 3.3, 3.5, 3.7)  # held-out KL rising with tokens: not under-trained
    assert lens_fidelity("tuned", [1], _kl(3.0), 256, convergence=rising).converged is True
    assert last_half_change(_curve(3.0)) is None
    # the half point is the one nearest to half of the final tokens
    assert last_half_change(_curve(4.0, 2.0, 1.0, tokens=(100, 520, 1000))) == (1.0 - 2.0) / 2.0


def test_the_record_names_every_number_and_reason():
    rec = lens_fidelity("tuned", [1, 2, 3], _kl(3.0), 256, training_tokens=1000, convergence=_curve(4, 3, 3, 3)).record()
    assert rec["layers"] == [1, 2, 3] and rec["held_out_kl"] == 3.0 and rec["training_tokens"] == 1000
    assert rec["converged"] is True and rec["unreliable"] == [] and rec["label"] == "faithful enough"
