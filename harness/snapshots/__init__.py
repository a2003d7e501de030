"""Numeric snapshots of claim results, compared with tolerances.

Four modules, one job each:

- :mod:`harness.snapshots.values`: what a snapshot keeps of a claim result
  (:func:`~harness.snapshots.values.snapshot_value`, ``dumps``/``loads``) and the
  comparison with tolerances (:func:`~harness.snapshots.values.compare`);
- :mod:`harness.snapshots.syrupy_extension`: ``NumericSnapshotExtension``, for tests;
- :mod:`harness.snapshots.store`: ``ModelSnapshots``, the real models' recorded
  snapshots (``claims/recorded_snapshots/``), and the records of each check;
- :mod:`harness.snapshots.gate`: ``python -m harness.snapshots.gate REPORT_DIR``, the
  nightly GPU workflow's pass/fail gate over a run's ``snapshot_checks.json`` files.

A snapshot value is one claim result on one model: its claim id and version, verdict,
statistic, interval, n, the statistics of its sub-checks, and its per-layer curves
(``{"share/Top-10": {"x": "layer", "at": [0, 1, ..., "final"], "values": [...]}}``),
taken from the claim's table as its ``Claim.curves`` name them. It is stored as JSON and compared number
by number: a number may move by its claim's :class:`~harness.claims.base.Tolerance` for
that field (``Claim.tolerances``, written next to each claim's registration), never
more. A failure names the claim and its version, the field, the layer, the expected and
the received value and the tolerance, and says how to accept an intended change:

    <claim id> v1 [tiny-gpt2 · logit · synthetic]: 1 number changed beyond its tolerance
      statistic changed: expected 0.416667, got 0.458333 (|diff| 0.0417 > tolerance rel 0, abs 0.001)
    If the change is intended, run pytest with --snapshot-update to record the new numbers;
    if you changed how <claim id> is computed, bump its Claim.version (harness/claims/) and run
    --snapshot-update.

The snapshot records the claim's version and definition digest (``Claim.definition_digest``:
threshold, direction, min_n and ``Claim.parameters``), so numbers recorded under another
version are not compared: the failure says that the definition changed and asks for
``--snapshot-update``; a changed digest under the same version asks for a version bump
first; re-running the same code always matches.

Two ways to use it:

- in tests, with syrupy: ``assert snapshot.use_extension(NumericSnapshotExtension) ==
  snapshot_value(result, table)`` (``--snapshot-update`` records new numbers, syrupy's
  normal flow); see ``tests/test_snapshots_tiny.py``;
- for real models in ``claims/``: ``ModelSnapshots`` keeps one file per (model,
  device and dtype, claim, lens, dataset) under ``claims/recorded_snapshots/`` and compares
  only where a file exists (a model without snapshots reports "no snapshot yet"); see
  ``claims/snapshot_fixture.py`` and ``docs/nightly-gpu.md``.

Measured run-to-run variation, which the tolerances are chosen from
(``python benchmarks/snapshot_variation.py``: tiny random models of all 13 families,
float32 on a CPU, the claims of ``tests/test_snapshots_tiny.py``; ``--default-model``:
the embedded default model, the early-guess claims on 150 prefixes, the layer-contribution
claims on 8 problems, the second-half refinement claim on 4, float32 and bfloat16 on a
CPU). Details and the resulting ``DECISIONS``, ``CONTINUOUS`` and ``EXACT`` tolerances:
``harness/claims/base.py``.

- the same computation twice: identical to the last bit (float32 and bfloat16);
- 1 vs 2 threads: numbers from argmax / top-k / rank decisions (shares, flip rates,
  overlaps) identical; continuous numbers (contributions, cosines, KL, skip effects) move
  by up to 8.4e-7 (tiny models); the default model: identical, in bfloat16 too;
- batch size 8 vs 1 (tiny) or 3 (default model): decisions identical; KL moves by up to
  1e-6 (default model, values about 10);
- the bootstrap with its fixed seed: identical intervals on identical inputs;
- float64 instead of float32 (float32's rounding error): decisions identical; continuous
  numbers move by up to 1.2e-6 (relative 3.7e-6 on numbers >= 1e-3);
- bfloat16 with batch size 8 vs 3 (other kernel shapes, like a torch or CUDA update on a
  GPU): about 1 decision in 150 flips on the default model (the early-frequent-guess
  statistic by 0.0067, the early-guess flip rates by 0.018), KL moves by 1.8e-3;
- bfloat16 instead of float32: shares move by 0.03 (default model) to 0.14 (tiny),
  continuous numbers by 1.4e-4 to 6e-2.

So a float32 CPU run reproduces its snapshot to float32 rounding; the tolerances allow
about 10x that for continuous numbers and no flipped decision. bfloat16 runs were
deterministic when repeated (measured on a CPU; assumed for the GPU runner, not measured
here), but a library or driver update flips near-tied decisions: that fails, naming the
torch version the snapshot was recorded with, and is re-recorded.
"""
