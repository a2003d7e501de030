"""The tuned lens's own quality: what every tuned-lens claim rests on."""

from __future__ import annotations

from functools import partial

import pytest

from harness.report.figures_lens import convergence_curves, convergence_table, kl_curves
from harness.report.outputs import atomic_path, write_figure_once

pytestmark = pytest.mark.claim


def _write(folder, stem: str, table, figure: partial) -> None:
    with atomic_path(folder / f"{stem}.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_figure_once(folder / f"{stem}.png", figure)


def test_tuned_lens_beats_logit_lens_on_held_out_text(model_session, need_lens):
    """On held-out text (never trained on), the tuned lens's KL to the final distribution
    is below the logit lens's at every layer before L. Writes the KL table and figure, and
    for a lens fitted here in closed form its convergence curve (KL by training tokens)."""
    lens = need_lens(lambda: model_session.lens("tuned"))
    table = model_session.lens_quality(lens)
    suffix = f"{model_session.lens_label('tuned')}_{model_session.corpus.name}"
    folder = model_session.writer.folder
    source = ", ".join(f"{k} {v}" for k, v in lens.source.items())
    _write(folder, f"tuned-lens-quality_{suffix}", table, partial(kl_curves, table, model_session.name, f"tuned lens: {source}"))
    record = lens.training_record or {}
    if record.get("convergence"):
        curve = convergence_table(record)
        _write(folder, f"tuned-lens-convergence_{suffix}", curve, partial(convergence_curves, curve, model_session.name, f"tuned lens: {source}"))
    worse = table[(table.layer < model_session.loaded.n_layers) & (table.tuned_kl >= table.logit_kl)]
    assert worse.empty, (
        f"The tuned lens ({source}) is not better than the logit lens at layers {worse.layer.tolist()}: "
        f"{worse[['layer', 'logit_kl', 'tuned_kl']].to_string(index=False)}"
    )
