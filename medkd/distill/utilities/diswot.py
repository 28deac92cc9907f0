# SPDX-License-Identifier: Apache-2.0
"""DisWOT: a training-free search for the student that distils best from a given teacher.

Dong et al., "DisWOT: Student Architecture Search for Distillation WithOut Training", CVPR 2023 (code:
lliai/DisWOT-CVPR2023). Both networks are scored at random initialisation on one labelled batch:

``score = -(M_sem + M_rel)`` (higher is better, 0 the maximum; :func:`diswot_score`):

- **M_sem** (semantic similarity, :func:`semantic_mismatch`): ``g`` = the gradient of the cross-entropy w.r.t. the
  classifier weight ``(K classes, D)``. ``channel`` (the paper's, for equal widths ``D``): per class ``c`` the
  channel correlation ``g_c g_cᵀ`` ``(D, D)``, rows L2-normalised, squared difference summed and divided by ``K·D``
  (the ICKD loss of the official code). ``class`` (widths differ) [recon]: the class Gram ``g gᵀ`` ``(K, K)``,
  rows L2-normalised, squared difference summed and divided by ``K``; both are the mean squared distance between
  normalised rows, in ``[0, 4]``. ``auto`` picks ``channel`` when the widths match.
- **M_rel** (sample relations, :func:`relation_mismatch`): ``F`` = the pre-pooling features ``(B, ...)`` (the input
  of the network's global pooling: ``pool`` of ``kd_cnn``, ``avgpool`` of MONAI's ResNets) flattened; ``G`` =
  ``F Fᵀ`` ``(B, B)`` with rows L2-normalised; ``M_rel = ||G_t - G_s||² / B²`` (similarity-preserving KD).

The weights follow the official initialisation (:func:`gaussian_init_`: convolution and linear weights ~ N(0, 1),
biases 0, normalisation scales 1), seeded, so a candidate with the teacher's architecture gets the teacher's very
weights and scores 0; the networks run in train mode (batch statistics). ``teacher_weights="trained"`` scores
against the trained teacher (eval mode) instead. The score does not depend on the order of the batch.
``repeats`` [medkd] averages it over several initialisation seeds: at random init it varies with the seed (on
SynthLesion-2D's 5 classes M_sem, which dominates, changes by about 0.5 from seed to seed).

**Search** (:func:`aging_evolution`, Real et al., AAAI 2019, as in DisWOT): a population of 36 random candidates
under the budget; each cycle samples 8 members (with replacement), mutates the best of them by one operation
(one gene of the architecture set to another value, or another family) and admits the child, removing the oldest.
Candidates over the parameter/FLOPs budget (or under ``budget_floor`` of it [medkd]) are never scored nor admitted. A
candidate is ``(net, net_params)`` of a registered network (:func:`create_space`: ``kd_cnn`` width x depth,
``monai_resnet`` ResNet-10/18 x widen factor).

The utility (``medkd distill search diswot``) scores against the experiment's teacher on one training batch, writes
``OUT/diswot.json`` (``student``: the net and net_params to paste into the YAML) and, with ``train``, trains the
chosen student and the YAML's default student with the experiment's terms (``OUT/chosen``, ``OUT/default``).

Example:
    >>> import torch
    >>> from medkd.nets import create_net
    >>> net = create_net("kd_cnn", in_channels=1, num_classes=3, width=4, depth=2)
    >>> x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> diswot_score(net, net, x, y).score
    0.0
    >>> space = create_space("kd_cnn", image_size=(16, 16))
    >>> best = aging_evolution(space, lambda c: -abs(c.genes_dict["width"] - 12) - abs(c.genes_dict["depth"] - 3),
    ...                        lambda c: {"params": 0}, budget={}, cycles=60, seed=0).best
    >>> best.candidate.net_params
    {'width': 12, 'depth': 3}
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.hooks import FeatureTap, tap_key
from medkd.distill.registry import register_utility
from medkd.distill.tools import ToolContext, Utility
from medkd.errors import ConfigError

if TYPE_CHECKING:
    from enum import Enum

__all__ = [
    "Candidate", "DisWOT", "DisWOTScore", "DisWOTScorer", "Evaluation", "Family", "SearchResult", "SearchSpace",
    "Semantic", "TeacherWeights", "aging_evolution", "candidate_costs", "classifier_and_pool", "create_space",
    "diswot_score", "gaussian_init_", "kd_cnn_family", "monai_resnet_family", "one_batch", "relation_mismatch",
    "semantic_mismatch", "train_and_compare",
]

logger = logging.getLogger(__name__)

#: kd_cnn first-stage widths of the search space
KD_CNN_WIDTHS = (4, 6, 8, 12, 16, 24, 32, 48)
#: MONAI ResNet widen factors of the search space (64-512 channels at 1.0)
RESNET_WIDEN = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)


class Semantic(StrEnum):
    """The M_sem form: ``channel`` (per-class channel correlations, equal widths), ``class`` (class Gram
    [recon]) or ``auto`` (``channel`` when the classifier widths match)."""

    AUTO = "auto"
    CHANNEL = "channel"
    CLASS = "class"


class TeacherWeights(StrEnum):
    """The teacher's weights when scoring: ``random`` (the paper: seeded random init) or ``trained``."""

    RANDOM = "random"
    TRAINED = "trained"


def _option(enum: type[Enum], value: Any, what: str) -> Any:
    from medkd.registry import resolve_option

    try:
        return resolve_option(enum, value, what)
    except ValueError as err:
        raise ConfigError(str(err)) from None


# ----------------------------------------------------------------------------------------------------- score
@dataclass(frozen=True)
class DisWOTScore:
    """``score = -(m_sem + m_rel)``; ``semantic`` is the M_sem form used (``channel`` or ``class``)."""

    score: float
    m_sem: float
    m_rel: float
    semantic: str


def gaussian_init_(net: nn.Module, seed: int = 0) -> nn.Module:
    """DisWOT's initialisation, in place: convolution/linear weights ~ N(0, 1) and biases 0, normalisation scales 1
    and shifts 0, drawn in module order from a generator seeded with ``seed`` (same architecture, same weights).

    Example:
        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> torch.equal(gaussian_init_(a, 1).weight, gaussian_init_(b, 1).weight)
        True
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
    return net


def classifier_and_pool(net: nn.Module) -> tuple[str, str]:
    """The dotted names of the classifier (the last ``nn.Linear``) and of the global pooling whose input is the
    pre-pooling feature map (a module named ``pool``/``avgpool``, else the last adaptive pooling).

    Raises:
        ConfigError: no linear layer or no pooling module.

    Example:
        >>> from medkd.nets import create_net
        >>> classifier_and_pool(create_net("kd_cnn")), classifier_and_pool(create_net("monai_resnet10"))
        (('head', 'pool'), ('fc', 'avgpool'))
    """
    from medkd.nets.classifiers import GlobalAvgPool

    modules = dict(net.named_modules())
    heads = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    pools = [n for n in ("pool", "avgpool", "global_pool") if n in modules]
    pools = pools or [n for n, m in modules.items() if isinstance(
        m, (GlobalAvgPool, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d))]
    if not heads or not pools:
        raise ConfigError(f"DisWOT needs a classifier (nn.Linear) and a global pooling module; {type(net).__name__} "
                          f"has linear layers {heads or 'none'} and pooling modules {pools or 'none'}")
    return heads[-1], pools[-1]


def _grad_and_features(net: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The CE gradient of the classifier weight ``(K, D)`` and the pre-pooling features ``(B, ...)``."""
    head_name, pool = classifier_and_pool(net)
    weight = dict(net.named_modules())[head_name].weight
    was = weight.requires_grad
    weight.requires_grad_(True)
    try:
        with FeatureTap(net, [pool], io="input", what="the network") as tap, torch.enable_grad():
            loss = F.cross_entropy(net(images).float(), labels)
            features = tap.features[tap_key(pool)].detach()
            (grad,) = torch.autograd.grad(loss, weight)
    finally:
        weight.requires_grad_(was)
    return grad.detach(), features


def semantic_mismatch(g_t: Tensor, g_s: Tensor, mode: str | Semantic = Semantic.AUTO) -> tuple[float, str]:
    """M_sem of classifier-weight gradients ``(K, D_t)`` and ``(K, D_s)`` and the form used (module docstring).

    ``channel`` uses that row ``i`` of the normalised ``g_c g_cᵀ`` is ``sign(g_ci) u_c`` (``u_c = g_c / |g_c|``),
    so the sum over rows is ``n_same |u_t - u_s|² + n_opposite |u_t + u_s|² + n_one_zero``, counting the channels
    whose signs agree, are opposite, or where one gradient is zero: ``O(K·D)`` instead of ``O(K·D²)``.

    Raises:
        ConfigError: ``channel`` with different widths, or different class counts.

    Example:
        >>> g = torch.randn(3, 4)
        >>> semantic_mismatch(g, g)[0], semantic_mismatch(g, torch.randn(3, 5))[1]
        (0.0, 'class')
    """
    mode = _option(Semantic, mode, "semantic")
    if g_t.shape[0] != g_s.shape[0]:
        raise ConfigError(f"teacher and student predict {g_t.shape[0]} and {g_s.shape[0]} classes")
    g_t, g_s = g_t.double(), g_s.double()
    if mode == Semantic.AUTO:
        mode = Semantic.CHANNEL if g_t.shape == g_s.shape else Semantic.CLASS
    if mode == Semantic.CHANNEL:
        if g_t.shape != g_s.shape:
            raise ConfigError(f"semantic=channel needs equal classifier widths, got {g_t.shape[1]} and {g_s.shape[1]}"
                              " (use semantic=class or auto)")
        a, b = torch.sign(g_t), torch.sign(g_s)
        u_t, u_s = F.normalize(g_t, dim=1, eps=1e-30), F.normalize(g_s, dim=1, eps=1e-30)
        same, opposite = (a * b > 0).sum(1), (a * b < 0).sum(1)
        one_zero = ((a == 0) != (b == 0)).sum(1)
        per_class = same * ((u_t - u_s) ** 2).sum(1) + opposite * ((u_t + u_s) ** 2).sum(1) + one_zero
        return float(per_class.sum() / g_t.numel()), mode.value
    gram_t, gram_s = F.normalize(g_t @ g_t.T, dim=1), F.normalize(g_s @ g_s.T, dim=1)
    return float(((gram_t - gram_s) ** 2).sum() / g_t.shape[0]), mode.value


def relation_mismatch(f_t: Tensor, f_s: Tensor) -> float:
    """M_rel = ``||G_t - G_s||² / B²``, ``G`` the row-normalised ``F Fᵀ`` of features ``(B, ...)`` flattened.

    Example:
        >>> f = torch.randn(4, 2, 3, 3)
        >>> relation_mismatch(f, 2 * f), relation_mismatch(f, torch.randn(4, 7)) > 0
        (0.0, True)
    """
    if f_t.shape[0] != f_s.shape[0]:
        raise ValueError(f"teacher and student features of {f_t.shape[0]} and {f_s.shape[0]} samples")
    f_t, f_s = f_t.flatten(1).double(), f_s.flatten(1).double()
    g_t, g_s = F.normalize(f_t @ f_t.T, dim=1), F.normalize(f_s @ f_s.T, dim=1)
    return float(((g_t - g_s) ** 2).sum() / f_t.shape[0] ** 2)


def _combine(g_t: Tensor, f_t: Tensor, g_s: Tensor, f_s: Tensor, semantic: str | Semantic) -> DisWOTScore:
    m_sem, form = semantic_mismatch(g_t, g_s, semantic)
    m_rel = relation_mismatch(f_t, f_s)
    return DisWOTScore(score=-(m_sem + m_rel) + 0.0, m_sem=m_sem, m_rel=m_rel, semantic=form)


def diswot_score(teacher: nn.Module, student: nn.Module, images: Tensor, labels: Tensor, *,
                 semantic: str | Semantic = Semantic.AUTO) -> DisWOTScore:
    """DisWOT's score of a teacher-student pair on one labelled batch, the networks as given (mode and weights).

    Args:
        teacher, student: classifiers with a global pooling and a final linear layer (:func:`classifier_and_pool`).
        images: ``(B, C, H, W[, D])``. labels: ``(B,)`` class indices.
        semantic: the M_sem form (:class:`Semantic`).

    Returns:
        :class:`DisWOTScore`; ``score`` is 0 for identical networks and negative otherwise.

    Raises:
        ConfigError: a network without classifier or pooling, different class counts, or a bad ``semantic``.
    """
    g_t, f_t = _grad_and_features(teacher, images, labels)
    g_s, f_s = _grad_and_features(student, images, labels)
    return _combine(g_t, f_t, g_s, f_s, semantic)


class DisWOTScorer:
    """Scores students against one teacher on one batch (the teacher's side computed once per seed).

    Args:
        teacher: the teacher (copied; the original is untouched).
        images, labels: the batch. seed: the initialisation seed of teacher and students.
        teacher_weights: ``random`` (re-initialised as the students, train mode) or ``trained`` (eval mode).
        semantic: the M_sem form.
        repeats: scores averaged over the seeds ``seed .. seed + repeats - 1`` (the paper: 1) [medkd].
    """

    def __init__(self, teacher: nn.Module, images: Tensor, labels: Tensor, *, seed: int = 0,
                 teacher_weights: str | TeacherWeights = TeacherWeights.RANDOM,
                 semantic: str | Semantic = Semantic.AUTO, repeats: int = 1) -> None:
        if repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {repeats}")
        self.seeds, self.images, self.labels = range(seed, seed + repeats), images, labels
        self.semantic = _option(Semantic, semantic, "semantic")
        weights = _option(TeacherWeights, teacher_weights, "teacher_weights")
        net = copy.deepcopy(teacher)
        if weights == TeacherWeights.TRAINED:
            self.teacher_sides = [_grad_and_features(net.eval(), images, labels)] * repeats
        else:
            self.teacher_sides = [_grad_and_features(gaussian_init_(net, s).train(), images, labels)
                                  for s in self.seeds]

    def __call__(self, student: nn.Module) -> DisWOTScore:
        """The score of ``student`` (re-initialised in place with each seed, train mode; means over the seeds)."""
        student = student.to(self.images.device)
        scores = []
        for s, (g_t, f_t) in zip(self.seeds, self.teacher_sides):
            gaussian_init_(student, s).train()
            scores.append(_combine(g_t, f_t, *_grad_and_features(student, self.images, self.labels), self.semantic))
        if len(scores) == 1:
            return scores[0]
        n = len(scores)
        return DisWOTScore(score=sum(x.score for x in scores) / n, m_sem=sum(x.m_sem for x in scores) / n,
                           m_rel=sum(x.m_rel for x in scores) / n, semantic=scores[0].semantic)


# ---------------------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Candidate:
    """One architecture: its ``family``, its ``genes`` (sorted ``(name, value)`` pairs) and the registered network
    ``net`` with ``net_params`` they stand for."""

    family: str
    genes: tuple[tuple[str, Any], ...]
    net: str = field(compare=False)
    net_params: dict[str, Any] = field(compare=False)

    @property
    def genes_dict(self) -> dict[str, Any]:
        """The genes as a dict."""
        return dict(self.genes)

    @property
    def key(self) -> str:
        """``net{net_params}``, unique per architecture."""
        return f"{self.net}{json.dumps(self.net_params, sort_keys=True)}"


@dataclass(frozen=True)
class Family:
    """A family of networks: ``genes`` (name -> allowed values) and ``to_net`` (genes -> ``(net, net_params)``)."""

    name: str
    genes: dict[str, tuple[Any, ...]]
    to_net: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


class SearchSpace:
    """The union of network families; :meth:`sample` draws uniformly (a family, then each gene), :meth:`mutate`
    changes one thing (a gene to another of its values, or the family, with random genes).

    Raises:
        ValueError: no family, a gene without values, or two families with one name.
    """

    def __init__(self, families: Sequence[Family]) -> None:
        if not families:
            raise ValueError("a search space needs at least one family")
        self.families = {f.name: f for f in families}
        if len(self.families) != len(families) or any(not v for f in families for v in f.genes.values()):
            raise ValueError("families need distinct names and every gene at least one value")

    def candidate(self, family: str, **genes: Any) -> Candidate:
        """The candidate of ``family`` with these genes."""
        fam = self.families[family]
        genes = {k: genes[k] for k in fam.genes}
        net, params = fam.to_net(genes)
        return Candidate(family, tuple(sorted(genes.items())), net, params)

    def sample(self, rng: random.Random) -> Candidate:
        """A uniformly random family, then uniformly random genes."""
        fam = self.families[rng.choice(sorted(self.families))]
        return self.candidate(fam.name, **{k: rng.choice(v) for k, v in fam.genes.items()})

    def mutate(self, cand: Candidate, rng: random.Random) -> Candidate:
        """One-operation mutation: one gene (with more than one value) or the family, changed."""
        fam = self.families[cand.family]
        ops = [g for g, values in fam.genes.items() if len(values) > 1] + (["<family>"] if len(self.families) > 1
                                                                             else [])
        if not ops:
            return cand
        op = rng.choice(ops)
        if op == "<family>":
            other = self.families[rng.choice(sorted(set(self.families) - {cand.family}))]
            return self.candidate(other.name, **{k: rng.choice(v) for k, v in other.genes.items()})
        genes = cand.genes_dict
        genes[op] = rng.choice([v for v in fam.genes[op] if v != genes[op]])
        return self.candidate(fam.name, **genes)

    def __len__(self) -> int:
        return sum(math.prod(len(v) for v in f.genes.values()) for f in self.families.values())


def kd_cnn_family(widths: Sequence[int] = KD_CNN_WIDTHS, depths: Sequence[int] = (1, 2, 3, 4, 5)) -> Family:
    """``kd_cnn`` of each width (first stage) and depth (stages)."""
    return Family("kd_cnn", {"width": tuple(widths), "depth": tuple(depths)},
                  lambda g: ("kd_cnn", {"width": int(g["width"]), "depth": int(g["depth"])}))


def monai_resnet_family(blocks: Sequence[int] = (10, 18), widen: Sequence[float] = RESNET_WIDEN) -> Family:
    """MONAI's ResNet-10/18 (``monai_resnet10``/``monai_resnet18``) at each widen factor."""
    return Family("monai_resnet", {"blocks": tuple(blocks), "widen_factor": tuple(widen)},
                  lambda g: (f"monai_resnet{g['blocks']}", {"widen_factor": float(g["widen_factor"])}))


def create_space(names: str | Sequence[str], image_size: Sequence[int] = (32, 32)) -> SearchSpace:
    """The search space of the named families (``kd_cnn``, ``monai_resnet``, or ``all``); ``kd_cnn`` depths are
    limited to what ``image_size`` allows (``2**(depth-1)`` pixels per axis).

    Raises:
        ConfigError: an unknown family name.
    """
    names = [names] if isinstance(names, str) else list(names)
    names = ["kd_cnn", "monai_resnet"] if names == ["all"] else names
    max_depth = int(math.log2(max(1, min(image_size)))) + 1
    builders = {"kd_cnn": lambda: kd_cnn_family(depths=tuple(range(1, min(5, max_depth) + 1))),
                "monai_resnet": monai_resnet_family}
    bad = [n for n in names if n not in builders]
    if bad or not names:
        raise ConfigError(f"space {bad or names!r}: the families are {', '.join(builders)} (or all)")
    return SearchSpace([builders[n]() for n in dict.fromkeys(names)])


# ------------------------------------------------------------------------------------------ aging evolution
@dataclass(frozen=True)
class Evaluation:
    """A scored candidate: ``score``, its ``cost`` (``params``, ``flops``), ``seconds`` to score it, and
    ``details`` (M_sem, M_rel ...)."""

    candidate: Candidate
    score: float
    cost: dict[str, float]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: net, net_params, score, cost, seconds, details."""
        return {"net": self.candidate.net, "net_params": self.candidate.net_params, "score": self.score,
                **self.cost, "seconds": round(self.seconds, 4), **self.details}


@dataclass
class SearchResult:
    """``best`` evaluation, every ``cycle``'s evaluation in order (repeats reuse the score), the ``evaluated``
    unique candidates and how many candidates over the budget were ``rejected`` unscored."""

    best: Evaluation
    cycles: list[Evaluation]
    evaluated: list[Evaluation]
    rejected: int


def aging_evolution(space: SearchSpace, score_fn: Callable[[Candidate], float | tuple[float, dict[str, Any]]],
                    cost_fn: Callable[[Candidate], Mapping[str, float]], *,
                    budget: Mapping[str, float | None | tuple[float | None, float | None]],
                    cycles: int = 100, population: int = 36, sample: int = 8, seed: int = 0,
                    max_tries: int = 500) -> SearchResult:
    """Regularised (aging) evolution under a budget (module docstring), maximising ``score_fn``.

    Args:
        space: the candidates. score_fn: candidate -> score (or ``(score, details)``), higher is better; called
            once per architecture. cost_fn: candidate -> costs (``{"params": ..., "flops": ...}``).
        budget: cost name -> maximum, or ``(minimum, maximum)`` (None: no limit); a candidate outside any is never
            scored nor admitted.
        cycles: candidates evaluated in all (the initial population included). population, sample: sizes.
        seed: the random seed. max_tries: draws per new candidate before giving up.

    Raises:
        ValueError: non-positive sizes, or no candidate within the budget after ``max_tries`` draws.
    """
    if min(cycles, population, sample, max_tries) < 1:
        raise ValueError(f"cycles, population, sample and max_tries must be >= 1, got {cycles}, {population}, "
                         f"{sample}, {max_tries}")
    rng = random.Random(seed)
    bounds = {k: tuple(v) if isinstance(v, (tuple, list)) else (None, v) for k, v in budget.items()}
    costs: dict[Candidate, dict[str, float]] = {}
    scored: dict[Candidate, Evaluation] = {}
    rejected: set[Candidate] = set()

    def feasible(c: Candidate) -> bool:
        if c not in costs:
            costs[c] = dict(cost_fn(c))
        ok = all((lo is None or costs[c].get(k, 0) >= lo) and (hi is None or costs[c].get(k, 0) <= hi)
                 for k, (lo, hi) in bounds.items())
        if not ok:
            rejected.add(c)
        return ok

    def draw(make: Callable[[], Candidate]) -> Candidate:
        for _ in range(max_tries):
            c = make()
            if feasible(c):
                return c
        raise ValueError(f"no candidate within the budget {dict(budget)} after {max_tries} draws "
                         f"(smallest seen: {min(costs.values(), key=lambda v: v.get('params', 0))})")

    def evaluate(c: Candidate) -> Evaluation:
        if c not in scored:
            t0 = time.perf_counter()
            out = score_fn(c)
            score, details = out if isinstance(out, tuple) else (out, {})
            scored[c] = Evaluation(c, float(score), costs[c], time.perf_counter() - t0, dict(details))
            logger.info("diswot: %s score %.5f (%s)", c.key, scored[c].score, costs[c])
        history.append(scored[c])
        return scored[c]

    history: list[Evaluation] = []
    pop: collections.deque[Evaluation] = collections.deque()
    while len(pop) < population and len(history) < cycles:
        pop.append(evaluate(draw(lambda: space.sample(rng))))
    while len(history) < cycles:
        parent = max((rng.choice(pop) for _ in range(sample)), key=lambda e: e.score)
        try:
            child = draw(lambda: space.mutate(parent.candidate, rng))
        except ValueError:
            child = draw(lambda: space.sample(rng))
        pop.append(evaluate(child))
        pop.popleft()
    evaluated = list(scored.values())
    return SearchResult(max(evaluated, key=lambda e: e.score), history, evaluated, len(rejected))


# --------------------------------------------------------------------------------------------------- utility
def one_batch(ctx: ToolContext, seed: int) -> tuple[Tensor, Tensor]:
    """One labelled training batch (``data.batch_size`` images) on ``ctx.device``.

    Raises:
        ConfigError: a segmentation experiment.
    """
    if ctx.cfg.task != "classification":
        raise ConfigError(f"student search needs a classification experiment, this one is {ctx.cfg.task}")
    batch = next(ctx.data.batches(seed))
    return batch["image"].to(ctx.device), batch["label"].to(ctx.device)


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    def acc(which: str, split: str) -> float | None:
        return summary.get(which, {}).get(split, {}).get("accuracy")

    return {"net": summary.get("net"), "params": summary.get("params"), "val_accuracy_best": acc("best", "val"),
            "test_accuracy_best": acc("best", "test"), "test_accuracy_last": acc("last", "test"),
            "seconds": summary.get("seconds")}


def train_and_compare(ctx: ToolContext, net: str, net_params: dict[str, Any]) -> dict[str, Any]:
    """Train the chosen student (``OUT/chosen``) and the experiment's default student (``OUT/default``) with the
    experiment's terms and teacher; their accuracies and the difference of the best-checkpoint test accuracies."""
    chosen = _brief(ctx.train(net=net, net_params=net_params, out=ctx.out / "chosen"))
    default = _brief(ctx.train(out=ctx.out / "default"))
    a, b = chosen["test_accuracy_best"], default["test_accuracy_best"]
    return {"chosen": {**chosen, "net_params": net_params},
            "default": {**default, "net_params": ctx.cfg.student.net_params},
            "delta_test_accuracy_best": None if a is None or b is None else round(a - b, 6)}


def candidate_costs(ctx: ToolContext) -> Callable[[str | None, dict[str, Any] | None], dict[str, float]]:
    """``(net, net_params)`` (None: the experiment's student) -> ``{"params", "flops"}`` for the experiment's
    input size."""
    from medkd.distill.flops import count_flops
    from medkd.nets import count_parameters

    shape = (ctx.cfg.data.in_channels, *ctx.cfg.data.image_size)

    def cost(net_name: str | None = None, net_params: dict[str, Any] | None = None) -> dict[str, float]:
        net = ctx.build_student(net_name, net_params)
        return {"params": count_parameters(net), "flops": count_flops(net, shape, device="cpu")}
    return cost


@register_utility("diswot")
class DisWOT(Utility):
    """DisWOT training-free student search: aging evolution of the student architecture scored at random init.

    ``medkd distill search diswot --config EXP.yaml --data-root DIR --out OUT [--param cycles=100 space=kd_cnn
    train=true]``: the teacher of ``teacher.checkpoint``, one training batch; writes ``OUT/diswot.json``.

    Args:
        budget_params: the largest parameter count (default: the experiment's student's).
        budget_flops: the largest FLOP count of one image (:func:`medkd.distill.flops.count_flops`; None: none).
        budget_floor: candidates must also use at least this fraction of each budget (0: none) [medkd], e.g. 0.5
            to compare students of about the same size (DisWOT's score does not grow with the size).
        cycles: candidates evaluated (the population included). population, sample: aging-evolution sizes.
        seed: search, batch and initialisation seed.
        space: ``kd_cnn``, ``monai_resnet``, ``all`` or a list of families.
        train: also train the chosen and the default student with the experiment's terms and compare them.
        teacher_weights: ``random`` (the paper) or ``trained``.
        semantic: the M_sem form: ``auto``, ``channel`` or ``class``.
        repeats: scores averaged over this many initialisation seeds (the paper: 1).
    """

    command = "search"

    def __init__(self, budget_params: int | None = None, budget_flops: int | None = None, budget_floor: float = 0.0,
                 cycles: int = 100, population: int = 36, sample: int = 8, seed: int = 0,
                 space: str | list[str] = "kd_cnn", train: bool = False, teacher_weights: str = "random",
                 semantic: str = "auto", repeats: int = 1) -> None:
        if min(cycles, population, sample) < 1:
            raise ValueError(f"cycles, population and sample must be >= 1, got {cycles}, {population}, {sample}")
        for value, name in ((budget_params, "budget_params"), (budget_flops, "budget_flops")):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0.0 <= budget_floor < 1.0:
            raise ValueError(f"budget_floor must be in [0, 1), got {budget_floor}")
        self.budget_params, self.budget_flops, self.budget_floor = budget_params, budget_flops, float(budget_floor)
        self.cycles, self.population, self.sample, self.seed = int(cycles), int(population), int(sample), int(seed)
        self.space, self.train = space, bool(train)
        self.teacher_weights = _option(TeacherWeights, teacher_weights, "teacher_weights")
        self.semantic = _option(Semantic, semantic, "semantic")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = int(repeats)

    def run(self, ctx: ToolContext) -> dict[str, Any]:
        from medkd.nets import count_parameters

        images, labels = one_batch(ctx, self.seed)
        space = create_space(self.space, ctx.cfg.data.image_size)
        teacher = ctx.load_teacher()
        cost = candidate_costs(ctx)
        default_cost = cost()
        limits = {"params": self.budget_params or default_cost["params"], "flops": self.budget_flops}
        budget = {k: (None if v is None or not self.budget_floor else self.budget_floor * v, v)
                  for k, v in limits.items()}
        scorer = DisWOTScorer(teacher.network, images, labels, seed=self.seed, teacher_weights=self.teacher_weights,
                              semantic=self.semantic, repeats=self.repeats)

        def score(c: Candidate) -> tuple[float, dict[str, Any]]:
            s = scorer(ctx.build_student(c.net, c.net_params))
            return s.score, {"m_sem": s.m_sem, "m_rel": s.m_rel, "semantic": s.semantic}

        t0 = time.perf_counter()
        try:
            result = aging_evolution(space, score, lambda c: cost(c.net, c.net_params), budget=budget,
                                     cycles=self.cycles, population=self.population, sample=self.sample,
                                     seed=self.seed)
        except ValueError as err:
            raise ConfigError(f"diswot: {err}; raise budget_params/budget_flops or widen the space") from None
        seconds = time.perf_counter() - t0
        default_score = scorer(ctx.build_student())
        best = result.best
        out: dict[str, Any] = {
            "student": {"net": best.candidate.net, "net_params": best.candidate.net_params},
            "overrides": [f"student.net={best.candidate.net}",
                          f"student.net_params={json.dumps(best.candidate.net_params)}"],
            "best": best.as_dict(),
            "default_student": {"net": ctx.cfg.student.net, "net_params": ctx.cfg.student.net_params,
                                "score": default_score.score, "m_sem": default_score.m_sem,
                                "m_rel": default_score.m_rel, **default_cost},
            "teacher": {"net": teacher.net, "source": str(teacher.source), "weights": self.teacher_weights.value,
                        "params": count_parameters(teacher.network)},
            "budget": limits, "budget_floor": self.budget_floor, "space": list(space.families),
            "space_size": len(space),
            "cycles": len(result.cycles), "evaluated": len(result.evaluated), "rejected_over_budget": result.rejected,
            "batch_size": int(labels.shape[0]), "repeats": self.repeats, "search_seconds": round(seconds, 3),
            "seconds_per_candidate": round(sum(e.seconds for e in result.evaluated) / len(result.evaluated), 4),
            "trajectory": [max(e.score for e in result.cycles[:i + 1]) for i in range(len(result.cycles))],
            "candidates": [e.as_dict() for e in sorted(result.evaluated, key=lambda e: -e.score)],
        }
        logger.info("diswot: best %s (score %.5f, %d params) of %d candidates, %.3f s each", best.candidate.key,
                    best.score, best.cost["params"], len(result.evaluated), out["seconds_per_candidate"])
        if self.train:
            out.update(train_and_compare(ctx, best.candidate.net, best.candidate.net_params))
        return out
