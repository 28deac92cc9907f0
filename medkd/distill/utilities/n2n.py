# SPDX-License-Identifier: Apache-2.0
"""N2N learning: compress the teacher's architecture into a student with two REINFORCE policies.

Ashok et al., "N2N Learning: Network to Network Compression via Policy Gradient Reinforcement Learning", ICLR 2018.
medkd's ``CompressionSearch`` for the ``kd_cnn`` family (``KDCNN`` teachers such as ``kd_cnn_wide``):

1. **block removal**: a policy chooses keep/drop for each stage of the teacher; the kept stages make a ``kd_cnn``
   of depth = their number (``kd_cnn`` derives stage widths and strides from the position, so only the count of
   kept stages changes the network) and the teacher's width; no stage kept is a violation.
2. **width shrinking**, from the best architecture of step 1: a policy chooses a scale from ``scales`` for the
   width (``kd_cnn`` has one width knob, so one decision [recon]; N2N shrinks every layer).

**Reward** (:func:`n2n_reward`): ``R = C(2 - C) · acc_s / acc_t`` with compression ``C = 1 - params_s / params_t``,
and ``R = -1`` when a constraint (``budget_params``, ``budget_flops``, a kept stage) is violated. ``acc_s / acc_t``:

- ``proxy: train``: validation accuracy of the candidate after a short distillation with the experiment's terms
  (``train_iterations`` steps, ``OUT/candidates/w{width}_d{depth}``) over the teacher's validation accuracy;
- ``proxy: diswot`` [recon]: ``exp(score / temperature)`` of the candidate's DisWOT score against the teacher
  (:mod:`medkd.distill.utilities.diswot`, both at seeded random init; ``score <= 0``), which lies in ``(0, 1]``
  and is 1 for the teacher's own architecture, like an accuracy ratio; no training.

Each architecture is evaluated once (cached); the teacher's own (``C = 0``, so ``R = 0``) is not measured.
**Policies** (:class:`CategoricalPolicy`) [recon]: N2N's removal policy is a bidirectional LSTM over layer
descriptions emitting one Bernoulli per layer; for a fixed teacher its inputs never change, so its distributions are
products of independent per-layer Bernoullis, which a table of logits (one row per decision, initialised uniform)
spans. **REINFORCE** (:func:`reinforce`): per episode
``rollouts`` actions are sampled, the loss ``-(R - b) log π(a)`` averaged and Adam takes a step; the baseline
``b`` is an exponential moving average of the rewards (``baseline_decay``), started at the first episode's mean.

The utility (``medkd distill search n2n``) writes ``OUT/n2n.json``: the best architecture (``student``: net and
net_params to paste into the YAML), every evaluated architecture and the per-episode rewards of both policies;
``train`` also trains the best and the YAML's student with the experiment's terms (``OUT/chosen``, ``OUT/default``).

Example:
    >>> round(n2n_reward(25, 100, 1.0), 4), n2n_reward(0, 100, 1.0), n2n_reward(10, 100, 0.9, violated=True)
    (0.9375, 1.0, -1.0)
    >>> remove_stages(32, [True, False, True, True]), shrink_width(32, 3, 0.5)
    ((32, 3), (16, 3))
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

from medkd.distill.registry import register_utility
from medkd.distill.tools import ToolContext, Utility
from medkd.distill.utilities.diswot import (
    DisWOTScorer, TeacherWeights, candidate_costs, one_batch, train_and_compare,
)
from medkd.errors import ConfigError

__all__ = ["CategoricalPolicy", "Episode", "N2N", "Proxy", "kd_cnn_shape", "n2n_reward", "reinforce",
           "remove_stages", "score_to_ratio", "shrink_width"]

logger = logging.getLogger(__name__)

#: width scales of the shrink policy
DEFAULT_SCALES = (0.25, 0.375, 0.5, 0.625, 0.75, 1.0)


class Proxy(StrEnum):
    """How a candidate's accuracy ratio is measured: ``train`` (short distillation) or ``diswot`` (score)."""

    TRAIN = "train"
    DISWOT = "diswot"


def n2n_reward(params_s: float, params_t: float, acc_ratio: float, *, violated: bool = False) -> float:
    """``C(2 - C) · acc_ratio`` with ``C = 1 - params_s / params_t``; -1 when ``violated``.

    ``C(2 - C)`` rises from 0 (no compression) to 1 (``C = 1``) on ``[0, 1]``, steeply at first (N2N, eq. 3).

    Raises:
        ValueError: ``params_t <= 0``.
    """
    if violated:
        return -1.0
    if params_t <= 0:
        raise ValueError(f"the teacher's parameter count must be > 0, got {params_t}")
    c = 1.0 - params_s / params_t
    return c * (2.0 - c) * acc_ratio


def score_to_ratio(score: float, temperature: float = 1.0) -> float:
    """A DisWOT score (``<= 0``) as an accuracy ratio in ``(0, 1]``: ``exp(score / temperature)`` [recon].

    Example:
        >>> score_to_ratio(0.0), round(score_to_ratio(-0.5), 4)
        (1.0, 0.6065)
    """
    return math.exp(min(0.0, score) / temperature)


def kd_cnn_shape(net: nn.Module) -> tuple[int, int]:
    """``(width, depth)`` of a ``KDCNN`` (``kd_cnn``, ``kd_cnn_wide``).

    Raises:
        ConfigError: another network.
    """
    from medkd.nets.classifiers import KDCNN

    if not isinstance(net, KDCNN):
        raise ConfigError(f"n2n compresses kd_cnn-family teachers (KDCNN: kd_cnn, kd_cnn_wide), not "
                          f"{type(net).__name__}")
    return net.widths[0], len(net.widths)


def remove_stages(width: int, keep: Sequence[bool]) -> tuple[int, int] | None:
    """The ``(width, depth)`` left when the stages with ``keep`` False are removed; None when none is kept."""
    depth = sum(bool(k) for k in keep)
    return (width, depth) if depth else None


def shrink_width(width: int, depth: int, scale: float) -> tuple[int, int]:
    """``(max(1, round(width · scale)), depth)``."""
    return max(1, round(width * scale)), depth


class CategoricalPolicy(nn.Module):
    """Independent categorical decisions: logits ``(decisions, choices)``, zero (uniform) at start.

    Example:
        >>> policy = CategoricalPolicy(3, 2)
        >>> actions, log_prob = policy.sample(torch.Generator().manual_seed(0))
        >>> actions.shape, round(float(log_prob.detach()), 4)
        (torch.Size([3]), -2.0794)
    """

    def __init__(self, decisions: int, choices: int) -> None:
        super().__init__()
        if min(decisions, choices) < 1:
            raise ValueError(f"decisions and choices must be >= 1, got {decisions} and {choices}")
        self.logits = nn.Parameter(torch.zeros(decisions, choices))

    def probabilities(self) -> Tensor:
        """``(decisions, choices)`` probabilities."""
        return self.logits.detach().softmax(-1)

    def sample(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One action per decision ``(decisions,)`` and their joint log-probability (differentiable)."""
        with torch.no_grad():
            actions = torch.multinomial(self.probabilities(), 1, generator=generator).squeeze(1)
        return actions, self.logits.log_softmax(-1).gather(1, actions[:, None]).sum()


@dataclass(frozen=True)
class Episode:
    """One policy update: the sampled ``actions`` (one list per rollout), their ``rewards``, the ``baseline`` they
    were compared with and the probability of the first rollout's actions before the update."""

    episode: int
    actions: list[list[int]]
    rewards: list[float]
    baseline: float
    probability: float


def reinforce(policy: CategoricalPolicy, reward_fn: Callable[[list[int]], float], *, episodes: int,
              lr: float = 0.1, baseline_decay: float = 0.9, rollouts: int = 1, seed: int = 0) -> list[Episode]:
    """REINFORCE with a moving-average baseline (Williams 1992; N2N §3.3).

    Args:
        policy: the policy (trained in place). reward_fn: actions (one int per decision) -> reward.
        episodes: policy updates. lr: Adam's learning rate. baseline_decay: ``b <- d·b + (1-d)·mean(R)``.
        rollouts: actions sampled per update. seed: the sampling seed.

    Raises:
        ValueError: non-positive ``episodes``/``rollouts``/``lr`` or a decay outside ``[0, 1)``.
    """
    if min(episodes, rollouts) < 1 or lr <= 0 or not 0.0 <= baseline_decay < 1.0:
        raise ValueError(f"episodes and rollouts must be >= 1, lr > 0 and baseline_decay in [0, 1), got {episodes},"
                         f" {rollouts}, {lr}, {baseline_decay}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    baseline: float | None = None
    log: list[Episode] = []
    for ep in range(episodes):
        samples = [policy.sample(gen) for _ in range(rollouts)]
        rewards = [float(reward_fn(a.tolist())) for a, _ in samples]
        mean = sum(rewards) / rollouts
        b = mean if baseline is None else baseline
        loss = torch.stack([-(r - b) * lp for r, (_, lp) in zip(rewards, samples)]).mean()
        log.append(Episode(ep, [a.tolist() for a, _ in samples], rewards, b, float(samples[0][1].detach().exp())))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        baseline = baseline_decay * b + (1.0 - baseline_decay) * mean
    return log


@register_utility("n2n")
class N2N(Utility):
    """N2N compression search: REINFORCE stage removal then width shrinking of a kd_cnn-family teacher.

    ``medkd distill search n2n --config EXP.yaml --data-root DIR --out OUT [--param proxy=diswot
    budget_params=300000]``: the teacher of ``teacher.checkpoint``; writes ``OUT/n2n.json``.

    Args:
        proxy: ``train`` (short distillation of each candidate) or ``diswot`` (the DisWOT score, no training).
        episodes_removal, episodes_shrink: policy updates of each step. rollouts: candidates per update.
        scales: the width scales, in ``(0, 1]``.
        budget_params, budget_flops: constraints (None: none); a candidate over one gets reward -1.
        train_iterations: steps of each candidate's distillation (``proxy: train``).
        lr, baseline_decay: REINFORCE's Adam learning rate and baseline decay.
        temperature: of the DisWOT score-to-ratio map. seed: sampling, batch and initialisation seed.
        teacher_weights: the DisWOT proxy's teacher: ``random`` or ``trained``.
        train: also train the best and the experiment's student with the experiment's terms and compare them.
    """

    command = "search"

    def __init__(self, proxy: str = "train", episodes_removal: int = 20, episodes_shrink: int = 20,
                 rollouts: int = 1, scales: Sequence[float] = DEFAULT_SCALES, budget_params: int | None = None,
                 budget_flops: int | None = None, train_iterations: int = 50, lr: float = 0.1,
                 baseline_decay: float = 0.9, temperature: float = 1.0, seed: int = 0,
                 teacher_weights: str = "random", train: bool = False) -> None:
        from medkd.registry import resolve_option

        self.proxy = resolve_option(Proxy, proxy, "proxy", "Proxies")
        if min(episodes_removal, episodes_shrink, rollouts, train_iterations) < 1:
            raise ValueError("episodes_removal, episodes_shrink, rollouts and train_iterations must be >= 1")
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must be in (0, 1], got {list(scales)}")
        if temperature <= 0 or lr <= 0 or not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"temperature and lr must be > 0 and baseline_decay in [0, 1), got {temperature}, {lr}, "
                             f"{baseline_decay}")
        self.episodes = (int(episodes_removal), int(episodes_shrink))
        self.rollouts, self.scales = int(rollouts), tuple(float(s) for s in scales)
        self.budget = {"params": budget_params, "flops": budget_flops}
        self.train_iterations, self.lr, self.baseline_decay = int(train_iterations), float(lr), float(baseline_decay)
        self.temperature, self.seed, self.train = float(temperature), int(seed), bool(train)
        self.teacher_weights = resolve_option(TeacherWeights, teacher_weights, "teacher_weights")

    def run(self, ctx: ToolContext) -> dict[str, Any]:
        from medkd.nets import count_parameters

        teacher = ctx.load_teacher()
        width, depth = kd_cnn_shape(teacher.network)
        params_t = count_parameters(teacher.network)
        cost = candidate_costs(ctx)
        if self.proxy == Proxy.DISWOT:
            images, labels = one_batch(ctx, self.seed)
            scorer = DisWOTScorer(teacher.network, images, labels, seed=self.seed,
                                  teacher_weights=self.teacher_weights)
            acc_t = None
        else:
            acc_t = float(ctx.data.validate(teacher.network, ctx.device)["accuracy"])
            if acc_t <= 0:
                raise ConfigError(f"the teacher {teacher.source} has validation accuracy 0: no accuracy ratio")
        seen: dict[tuple[int, int], dict[str, Any]] = {}

        def evaluate(arch: tuple[int, int] | None) -> float:
            if arch is None:
                return -1.0
            if arch not in seen:
                w, d = arch
                params = {"width": w, "depth": d}
                rec: dict[str, Any] = {"net": "kd_cnn", "net_params": params, **cost("kd_cnn", params)}
                rec["violated"] = [k for k, lim in self.budget.items() if lim is not None and rec[k] > lim]
                rec["compression"] = 1.0 - rec["params"] / params_t
                t0 = time.perf_counter()
                if rec["violated"] or rec["compression"] == 0.0:  # R = -1, or R = 0 whatever the accuracy
                    rec["acc_ratio"] = None
                elif self.proxy == Proxy.DISWOT:
                    s = scorer(ctx.build_student("kd_cnn", params))
                    rec["diswot_score"] = s.score
                    rec["acc_ratio"] = score_to_ratio(s.score, self.temperature)
                else:
                    summary = ctx.train(net="kd_cnn", net_params=params, out=ctx.out / "candidates" / f"w{w}_d{d}",
                                        iterations=self.train_iterations)
                    rec["val_accuracy"] = summary["best"]["val"]["accuracy"]
                    rec["acc_ratio"] = rec["val_accuracy"] / acc_t
                rec["seconds"] = round(time.perf_counter() - t0, 4)
                rec["reward"] = n2n_reward(rec["params"], params_t, rec["acc_ratio"] or 0.0,
                                           violated=bool(rec["violated"]))
                logger.info("n2n: kd_cnn width %d depth %d: reward %.4f (C %.3f, ratio %s)", w, d, rec["reward"],
                            rec["compression"], rec["acc_ratio"])
                seen[arch] = rec
            return seen[arch]["reward"]

        def best_arch(default: tuple[int, int]) -> tuple[int, int]:
            ok = [(rec["reward"], a) for a, rec in seen.items() if not rec["violated"]]
            return max(ok)[1] if ok else default

        t0 = time.perf_counter()
        removal = CategoricalPolicy(depth, 2)  # action 1 keeps the stage
        log_r = reinforce(removal, lambda a: evaluate(remove_stages(width, [x == 1 for x in a])),
                          episodes=self.episodes[0], lr=self.lr, baseline_decay=self.baseline_decay,
                          rollouts=self.rollouts, seed=self.seed)
        start = best_arch((width, depth))
        shrink = CategoricalPolicy(1, len(self.scales))
        log_s = reinforce(shrink, lambda a: evaluate(shrink_width(*start, self.scales[a[0]])),
                          episodes=self.episodes[1], lr=self.lr, baseline_decay=self.baseline_decay,
                          rollouts=self.rollouts, seed=self.seed + 1)
        seconds = time.perf_counter() - t0
        valid = [rec for rec in seen.values() if not rec["violated"]]
        best = max(valid, key=lambda r: r["reward"]) if valid else None
        out: dict[str, Any] = {
            "student": {"net": best["net"], "net_params": best["net_params"]} if best else None,
            "best": best, "proxy": self.proxy.value, "budget": self.budget,
            "teacher": {"net": teacher.net, "source": str(teacher.source), "width": width, "depth": depth,
                        "params": params_t, "val_accuracy": acc_t},
            "removal": {"episodes": [asdict(e) for e in log_r],
                        "keep_probabilities": removal.probabilities()[:, 1].tolist()},
            "shrink": {"start": {"width": start[0], "depth": start[1]}, "scales": list(self.scales),
                       "episodes": [asdict(e) for e in log_s],
                       "scale_probabilities": shrink.probabilities()[0].tolist()},
            "rewards": [r for e in log_r + log_s for r in e.rewards],
            "evaluated": sorted(seen.values(), key=lambda r: -r["reward"]),
            "search_seconds": round(seconds, 3),
        }
        if best is None:
            logger.warning("n2n: no architecture met the constraints %s", self.budget)
        elif self.train:
            out.update(train_and_compare(ctx, best["net"], best["net_params"]))
        return out
