"""benchmarks/gpu_check.py: its tiny CPU form end to end, its FLOP count against the
published pythia-6.9b parameter counts, the peak table, and the suite wiring (with a
stand-in for the pytest subprocess: the real suite is never run here)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
import torch

from benchmarks import gpu_check as gpu


def expected_flops(config: dict, seq_len: int) -> tuple[int, int, int]:
    """(non-embedding parameters, engine FLOPs/token, forward FLOPs/token) of a GPT-NeoX
    config, by hand: per layer two LayerNorms (4d), fused QKV (3d^2 + 3d), output
    projection (d^2 + d), MLP (dI + I + Id + d); a final LayerNorm (2d)."""
    d, n_layers, inter, vocab = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"], config["vocab_size"]
    n = n_layers * (4 * d * d + 2 * d * inter + 9 * d + inter) + 2 * d
    base = 2 * n + 2 * n_layers * seq_len * d
    return n, base + 2 * d * vocab * (n_layers + 1), base + 2 * d * vocab


def test_tiny_run_writes_the_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    gpu.main(["--config", "tiny", "--device", "cpu", "--skip-suite", "--out", str(out),
             "--sequences", "8", "--seq-len", "32", "--batch-sizes", "4,8", "--rounds", "1"])
    result = json.loads(out.read_text())
    n, engine, forward = expected_flops(gpu.CONFIGS["tiny"], seq_len=32)
    assert result["flops_per_token"]["non_embedding_params"] == n
    assert result["flops_per_token"]["engine"] == engine
    assert result["flops_per_token"]["forward"] == forward
    assert result["settings"]["tokens"] == 8 * 32
    assert result["settings"]["dtype"] == "float32"
    runs = {(r["what"], r["reductions"], r["batch_size"]) for r in result["runs"]}
    assert runs == {(w, red, b) for b in (4, 8) for w, red in (("engine", "top1"), ("engine", "full"), ("forward", None))}
    for r in result["runs"]:
        assert r["tokens_per_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(256 / min(r["seconds"]))
        assert r["tflops"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / 1e12)
        assert r["flops_per_token"] == (engine if r["what"] == "engine" else forward)
        assert r["share_of_peak"] is None  # a CPU is not in the bf16 peak table
        assert r["peak_memory_gib"] is None
    assert result["peak_tflops"] is None and result["suite"] is None
    assert result["machine"]["torch"] == torch.__version__ and result["machine"]["transformers"]


def test_pythia_config_gives_the_published_parameter_counts():
    """Built on the meta device (nothing allocated): the config written out in the script
    is pythia-6.9b's (6,857,302,016 parameters, 6,444,163,072 without embeddings)."""
    model = gpu.build_model(gpu.build_config("pythia-6.9b"), torch.device("meta"), torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 6_857_302_016
    flops = gpu.flop_count(model, seq_len=512)
    n, engine, forward = expected_flops(gpu.CONFIGS["pythia-6.9b"], seq_len=512)
    assert flops.non_embedding_params == n == 6_444_163_072
    assert (flops.engine, flops.forward) == (engine, forward)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.0),
    ("NVIDIA H100 80GB HBM3", 989.0),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L4", 121.0),
    ("NVIDIA L40S", None),
    ("NVIDIA GeForce RTX 4090", 165.0),
    ("AMD EPYC 7B13 64-Core Processor", None),
])
def test_peak_table(name, peak):
    assert gpu.peak_tflops(name)[0] == peak


def test_peak_override_and_share():
    assert gpu.peak_tflops("NVIDIA L40S", override=362.0) == (362.0, "--peak-tflops")
    with pytest.raises(ValueError, match="--peak-tflops"):
        gpu.peak_tflops("NVIDIA H200", override=0)
    t = gpu.Timing("engine", "top1", 8, tokens=1000, seconds=[2.0, 0.5], flops_per_token=10**12, peak_tflops=4000.0, peak_memory_gib=None)
    assert (t.tokens_per_s, t.tflops, t.share_of_peak) == (2000.0, 2000.0, 0.5)


@pytest.mark.parametrize("argv, message", [
    (["--config", "tiny", "--seq-len", "4096"], "longer than"),
    (["--config", "tiny", "--batch-sizes", "8,0"], "positive integers"),
    (["--config", "tiny", "--reductions", "top1,kl"], "unknown reductions"),
    (["--config", "tiny", "--rounds", "0"], "--rounds"),
])
def test_bad_arguments_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit):
        gpu.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="refuses only without a GPU")
def test_large_config_refuses_a_cpu(tmp_path):
    with pytest.raises(SystemExit, match="--config tiny --device cpu"):
        gpu.main(["--device", "cpu", "--skip-suite", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def _record(claim: str, started: datetime, statistic: float | None) -> dict:
    return {"claim": claim, "model": "m", "lens": "logit", "dataset": "prose", "label": "replicated",
            "statistic": statistic, "ci_low": 0.25, "ci_high": 0.5, "n": 12,
            "provenance": {"run_started_at": started.isoformat(timespec="seconds"), "device": "cuda", "dtype": "bfloat16"}}


def test_suite_runs_pytest_on_the_device_with_a_fresh_cache(tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    (reports / "m").mkdir(parents=True)
    old = datetime.now(timezone.utc) - timedelta(days=1)
    (reports / "m" / "claims.json").write_text(json.dumps([_record("OLD-1", old, 0.1)]))
    seen = {}

    class FakePopen:
        """Stands in for the pytest subprocess: records what it was given, writes one
        fresh verdict beside the old one and exits with status 1."""

        def __init__(self, cmd, cwd, env, **kwargs):
            seen.update(cmd=cmd, cwd=cwd, cache=env["DEPTH_CLAIMS_TRACE_CACHE"])
            seen["cache_was_empty"] = os.path.isdir(env["DEPTH_CLAIMS_TRACE_CACHE"]) and not os.listdir(env["DEPTH_CLAIMS_TRACE_CACHE"])
            now = datetime.now(timezone.utc)
            records = [_record("OLD-1", old, 0.1), _record("GTR-1", now, 0.375), _record("CSO-2", now, None)]
            (reports / "m" / "claims.json").write_text(json.dumps(records))
            self.stdout = iter(["1 failed, 2 passed\n"])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def wait(self):
            return 1

    monkeypatch.setattr(gpu.subprocess, "Popen", FakePopen)
    suite = gpu.run_suite("cuda", reports)
    cmd = seen["cmd"]
    assert cmd[1:5] == ["-m", "pytest", "claims/", "--no-control"] and "--train-lens" in cmd
    assert cmd[cmd.index("--device") + 1] == "cuda" and cmd[cmd.index("--report-dir") + 1] == str(reports)
    assert seen["cache_was_empty"] and not os.path.exists(seen["cache"])  # a fresh folder, removed afterwards
    assert suite["exit_status"] == 1 and suite["wall_s"] >= 0 and suite["output_tail"] == ["1 failed, 2 passed"]
    assert [v["claim"] for v in suite["verdicts"]] == ["GTR-1", "CSO-2"]
    assert suite["verdicts"][0]["line"] == "GTR-1 [m · logit lens · prose] replicated: 0.375 (95% CI 0.250 to 0.500, n=12)"
    assert suite["verdicts"][1]["line"] == "CSO-2 [m · logit lens · prose] replicated"
    assert suite["verdicts"][0]["device"] == "cuda"
