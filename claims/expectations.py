"""Where a claim is known not to replicate on a model: the one place that says so.

Each entry maps (claim id, model name, lens) -- or (claim id, model name, lens, dataset)
when the finding depends on the data -- to the reason, with the numbers we saw.
A claim listed here still runs and is reported with its real verdict; the test is an
expected failure (strict: if it starts to replicate, the test fails until the entry is
removed). Never loosen a threshold instead of adding an entry here.
"""

from __future__ import annotations

EXPECTED_NOT_REPLICATED: dict[tuple[str, ...], str] = {
    ("GTR-4", "smollm2-135m-instruct-q4", "logit"): (
        "inconclusive on the embedded facts, now with enough 3-token facts to decide (679 facts; 23 paired "
        "2-token and 61 paired 3-token facts, all positions correct): the weakest of the paired differences is "
        "-0.066 layers (95% CI -1.75 to 0.47, n=84): at least one check (length x k) cannot show "
        "answer token 1 deeper than the later tokens on this model; earlier, with 6 paired 3-token facts, the "
        "2-token checks replicated (k=1: +0.96, CI 0.35-1.60)."
    ),
    ("GTR-5", "smollm2-135m-instruct-q4", "logit"): (
        "contradicted with the logit lens on the embedded prompts: the options enter the lens top-10 only "
        "at 72% of depth (mean s/L 0.720, 95% CI 0.712-0.728, n=472; MMLU 19.0, SST 25.0, MRPC 20.7 of 30 "
        "layers), and on SST the choice among the options settles before they are shortlisted. On the paper's "
        "own prompts (100 per task) likewise: 0.699 (0.690-0.710), n=300, with the decision 0.24 L later. The paper "
        "read this through the tuned lens on 1.5-8B models; with this suite's tuned lens the finding stays "
        "(see the tuned entry), so it is not a logit-lens artefact on this model."
    ),
    # Tuned lens: the lens this suite trains on this CPU (recipe cpu-small: 48 steps, 12,288 tokens
    # of the embedded prose; held-out KL 2-4x below the logit lens's at every layer before L).
    ("GTR-1", "smollm2-135m-instruct-q4", "tuned"): (
        "inconclusive with the self-trained tuned lens: early-layer Top-10 share 0.44 vs 0.28 for final "
        "predictions, a gap of 0.160 (95% CI 0.117-0.204, n=534) against the claimed > 0.20 (the logit lens "
        "gives 0.401). Frequent early guesses are there, but less dominant than in the paper's Pythia-6.9B "
        "(>75% vs 1/3); our lens saw only 12k training tokens (the paper's recipe: 65M)."
    ),
    ("GTR-4", "smollm2-135m-instruct-q4", "tuned"): (
        "inconclusive for the same reason as with the logit lens: only 6 paired 3-token facts among the "
        "embedded answers (weakest difference len3 k=10: CI reaches below 0); the 2-token checks replicate."
    ),
    ("GTR-5", "smollm2-135m-instruct-q4", "tuned"): (
        "contradicted with the self-trained tuned lens too: the options enter the top-10 at 73% of depth "
        "(mean s/L 0.729, 95% CI 0.725-0.733, n=472; MMLU 22.0, SST 22.7, MRPC 20.5 of 30 layers) and the choice "
        "settles 0.18 L later (that half replicates). Shortlisting happens late on this 135M model whichever lens reads it."
    ),
    ("GTR-6", "smollm2-135m-instruct-q4", "logit-vs-tuned"): (
        "contradicted: in layers 1-7 the logit lens puts MORE probability on Top-10 tokens than the tuned lens "
        "(0.643 vs 0.259; difference -0.385, 95% CI -0.413 to -0.357, n=534); the tuned lens's early Top-10 mass "
        "is close to the final distribution's (0.236), while the logit lens stays above 0.6 until layer 25. "
        "Untested explanation: SmolLM2 ties its input and output embeddings (Pythia does not), so the logit lens "
        "reads residuals in the embedding geometry. The paper's finding is on Pythia-6.9B with a fully trained "
        "lens; ours saw 12k tokens."
    ),
    ("GTR-7", "smollm2-135m-instruct-q4", "tuned-vs-downweighted"): (
        "contradicted: with Top-10 targets down-weighted x0.1 (Top-100 x0.5) the lens's early Top-10 share of "
        "top-1 falls from 0.441 to 0.223 (difference -0.217, 95% CI -0.239 to -0.197, n=534; final predictions: "
        "0.281), beyond the 0.10 tolerance. On this model, with 12k-token lenses, the early frequent guesses of "
        "the tuned lens depend on how its loss weights frequent targets: partly a probe artefact here."
    ),
}
