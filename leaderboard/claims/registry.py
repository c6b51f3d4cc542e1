"""The claims checked on the board: each paper's headline claim as an experiment with a rule.

Each entry names the paper and the exact place the claim is made, states it in one sentence,
and fixes the experiment and the decision rule before any data exists. The CPU-size versions run
on the CI suites; what would change a verdict (more seeds, the GPU-size suite, the paper's large
batch) is stated with each. Changing an experiment or a rule bumps the claim's ``version``.

Damping in this project is in the mean-loss convention (docs/conventions.md, "Damping"): the
iEF paper's near-undamped lambda_p = 1e-7 at its batch 32 is about 3e-9 here; 1e-6 keeps every
method's solve well conditioned in float32 while staying far below every method's default.
"""

from __future__ import annotations

from leaderboard.claims.spec import ApproxExperiment, Arm, Claim, Rule, RunExperiment

ADAMW_CALIBRATED = Arm("AdamW (calibrated)", "adamw", calibrated=True)
SHARED_DAMPING = 1e-6
DAMPING_SWEEP = (1.0, 1e-2, 1e-4, 1e-6)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="ief-approx-ordering",
        version=1,
        paper="Wu et al. 2024, An Improved Empirical Fisher Approximation for Natural Gradient Descent",
        place="Sec. 7 (E1), Figs. 2-3",
        statement=(
            "At one shared damping, iEF's update approximates the natural gradient better than SGD's "
            "(gamma ratio below 1) and better than EF's and SF's, throughout training."
        ),
        experiment=ApproxExperiment(
            suites=("digits-mlp", "mnist1d-mlp", "minilm-lora"),
            methods=("sgd", "ef", "sf", "ief"),
            dampings=(SHARED_DAMPING,),
        ),
        rule=Rule(
            "approx_ordering",
            "per suite, at >= 80 % of checkpoints (medians over batches) iEF's gamma ratio < 1 and its gamma "
            "below EF's and SF's: holds; below 50 %: does not hold; else inconclusive",
            (("method", "ief"), ("baselines", ("ef", "sf")), ("damping", SHARED_DAMPING), ("share", 0.8)),
        ),
        would_change="more checkpoints and batches; the GPU-size LoRA suite (cifar100-vit-lora), the paper setting",
    ),
    Claim(
        id="ief-damping-robust",
        version=1,
        paper="Wu et al. 2024, An Improved Empirical Fisher Approximation for Natural Gradient Descent",
        place="Sec. 7 (E3), Fig. 3",
        statement="As the damping goes to zero iEF's approximation quality stays good while EF's and SF's degrade.",
        experiment=ApproxExperiment(
            suites=("digits-mlp", "mnist1d-mlp"), methods=("sgd", "ef", "sf", "ief"), dampings=DAMPING_SWEEP
        ),
        rule=Rule(
            "damping_robustness",
            "per suite, iEF's median gamma ratio grows at most 2x from damping 1 to 1e-6 while EF's and SF's grow "
            "more than 2x: holds; iEF's grows more than 2x: does not hold; else inconclusive",
            (("method", "ief"), ("baselines", ("ef", "sf")), ("factor", 2.0)),
        ),
        would_change="a finer damping grid; the transformer suite",
    ),
    Claim(
        id="ief-peft-speed",
        version=1,
        paper="Wu et al. 2024, An Improved Empirical Fisher Approximation for Natural Gradient Descent",
        place="Sec. 7 (E2), Table 1",
        statement=(
            "On parameter-efficient fine-tuning of a pretrained transformer, iEF reaches AdamW's validation "
            "metric at least as fast as AdamW."
        ),
        experiment=RunExperiment(suites=("minilm-lora",), arms=(Arm("iEF", "ief"), ADAMW_CALIBRATED)),
        rule=Rule(
            "not_slower",
            "steps to the suite's target: AdamW significantly faster, or iEF missing where AdamW reaches it: "
            "does not hold; with >= 3 seeds, iEF's median within 1x AdamW's: holds; else inconclusive",
            (("a", "iEF"), ("b", "AdamW (calibrated)"), ("value", "steps_to_target"), ("margin", 1.0)),
        ),
        would_change="iEF tuned with the same budget as AdamW (the paper tunes both); more seeds",
    ),
    Claim(
        id="adamqlr-untuned",
        version=1,
        paper="Mackay et al. 2023, Adam through a Second-Order Lens",
        place="Sec. 5, Figs. 2-4 (untuned AdamQLR)",
        statement="AdamQLR with its untuned defaults performs about as well as tuned Adam.",
        experiment=RunExperiment(
            suites=("breast-cancer-logreg", "diabetes-mlp", "concrete-mlp", "digits-mlp"),
            arms=(Arm("AdamQLR (untuned)", "adamqlr"), ADAMW_CALIBRATED),
        ),
        rule=Rule(
            "not_slower",
            "steps to target: AdamW significantly faster or AdamQLR missing where AdamW reaches it: does not "
            "hold; with >= 3 seeds, AdamQLR's median within 1.5x AdamW's: holds; else inconclusive",
            (("a", "AdamQLR (untuned)"), ("b", "AdamW (calibrated)"), ("value", "steps_to_target"), ("margin", 1.5)),
        ),
        would_change="the paper's large batch (a full-batch variant of the small suites); more seeds",
    ),
    Claim(
        id="adamqlr-cost",
        version=1,
        paper="Mackay et al. 2023, Adam through a Second-Order Lens",
        place="Sec. 3 (cost of one step)",
        statement="One AdamQLR step costs about two Adam steps.",
        experiment=RunExperiment(suites=("digits-mlp",), arms=(Arm("AdamQLR", "adamqlr"), Arm("AdamW", "adamw"))),
        rule=Rule(
            "cost_ratio",
            "the 95 % interval of the ratio of median step times lies within [1.5, 2.5]: holds; wholly "
            "outside: does not hold; else inconclusive",
            (("a", "AdamQLR"), ("b", "AdamW"), ("low", 1.5), ("high", 2.5)),
        ),
        would_change="a quiet machine with one thread; the GPU, where launch overheads differ",
    ),
    Claim(
        id="fngd-vs-kfac",
        version=1,
        paper="Liu et al. 2024, Fast Natural Gradient Descent (FNGD)",
        place="Abstract; Sec. 5 (2.07x over K-FAC on CIFAR-100)",
        statement="FNGD reaches the target in less wall-clock time than K-FAC.",
        experiment=RunExperiment(
            suites=("digits-mlp", "digits-cnn", "mnist1d-mlp"), arms=(Arm("FNGD", "fngd"), Arm("K-FAC", "kfac"))
        ),
        rule=Rule(
            "faster",
            "per suite, time to target over seeds (misses +inf): FNGD significantly faster (one-sided permutation "
            "test, p <= 0.05): holds; K-FAC significantly faster: does not hold; else inconclusive",
            (("a", "FNGD"), ("b", "K-FAC"), ("value", "time_to_target_s")),
        ),
        would_change="the GPU-size ResNet suite (the paper's setting); more seeds",
    ),
    Claim(
        id="egn-vs-adam",
        version=1,
        paper="Korbit et al. 2024, Exact Gauss-Newton Optimization for Training Deep Neural Networks",
        place="Sec. 5, Figs. 2-4",
        statement="EGN is at least as good as tuned Adam on regression and classification.",
        experiment=RunExperiment(
            suites=("diabetes-mlp", "concrete-mlp", "digits-mlp"), arms=(Arm("EGN", "egn"), ADAMW_CALIBRATED)
        ),
        rule=Rule(
            "not_slower",
            "steps to target: AdamW significantly faster or EGN missing where AdamW reaches it: does not hold; "
            "with >= 3 seeds, EGN's median within 1.25x AdamW's: holds; else inconclusive",
            (("a", "EGN"), ("b", "AdamW (calibrated)"), ("value", "steps_to_target"), ("margin", 1.25)),
        ),
        would_change="EGN tuned with the same budget; the paper's larger models",
    ),
    Claim(
        id="kfac-fewer-steps",
        version=1,
        paper="Martens & Grosse 2015, Optimizing Neural Networks with Kronecker-factored Approximate Curvature",
        place="Sec. 13, Figs. 9-11",
        statement="K-FAC needs fewer steps to reach the target than SGD with momentum and than Adam.",
        experiment=RunExperiment(
            suites=("digits-mlp", "digits-cnn", "mnist1d-mlp"),
            arms=(Arm("K-FAC", "kfac"), Arm("SGD", "sgd"), ADAMW_CALIBRATED),
        ),
        rule=Rule(
            "faster",
            "per suite and baseline, steps to target over seeds (misses +inf): K-FAC significantly fewer (one-sided "
            "permutation test, p <= 0.05): holds; the baseline significantly fewer: does not hold; else inconclusive",
            (("a", "K-FAC"), ("b", ("SGD", "AdamW (calibrated)")), ("value", "steps_to_target")),
        ),
        would_change="the autoencoder benchmarks of the paper; SGD tuned; more seeds",
    ),
)


def claims(size: str | None = None) -> tuple[Claim, ...]:
    """The registered claims, optionally only those of one size (``ci`` or ``gpu``)."""
    return tuple(c for c in CLAIMS if size is None or c.size == size)


def get_claim(claim_id: str) -> Claim:
    for claim in CLAIMS:
        if claim.id == claim_id:
            return claim
    known = ", ".join(c.id for c in CLAIMS)
    raise KeyError(f"unknown claim {claim_id!r} (known: {known})")
