"""The tuned lens's own quality: what every tuned-lens claim rests on."""

from __future__ import annotations

import pytest

from harness.report.figures_lens import kl_curves
from harness.report.outputs import atomic_path

pytestmark = pytest.mark.claim


def test_tuned_lens_beats_logit_lens_on_held_out_text(model_session, need_lens):
    """On held-out text (never trained on), the tuned lens's KL to the final distribution
    is below the logit lens's at every layer before L. Writes the KL table and figure."""
    lens = need_lens(lambda: model_session.lens("tuned"))
    table = model_session.lens_quality(lens)
    stem = f"tuned-lens-quality_{model_session.lens_label('tuned')}_{model_session.corpus.name}"
    folder = model_session.writer.folder
    with atomic_path(folder / f"{stem}.csv") as tmp:
        table.to_csv(tmp, index=False)
    source = ", ".join(f"{k} {v}" for k, v in lens.source.items())
    fig = kl_curves(table, model_session.name, f"tuned lens: {source}")
    with atomic_path(folder / f"{stem}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    worse = table[(table.layer < model_session.loaded.n_layers) & (table.tuned_kl >= table.logit_kl)]
    assert worse.empty, (
        f"The tuned lens ({source}) is not better than the logit lens at layers {worse.layer.tolist()}: "
        f"{worse[['layer', 'logit_kl', 'tuned_kl']].to_string(index=False)}"
    )
