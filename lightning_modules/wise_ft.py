"""WiSE-FT: mix fine-tuned weights with the ones fine-tuning started from, the mix chosen on categories never trained on.

Fine-tuning a tower on the training leaves can cost what the pretrained tower knew about the others (Wortsman et al.,
*Robust fine-tuning of zero-shot models*, 2022). The weights served are

    theta(alpha) = (1 - alpha) * theta_start + alpha * theta_finetuned

over the *mixed set* of tensors:

- every floating-point tensor of each fine-tuned tower (frozen towers are untouched), its start side the pretrained
  tower rebuilt from its name;
- when the fit starts from another run's network (``model.init_from``: stage 2 of linear-probe-then-fine-tune),
  also every other tensor stage 2 trains (:func:`head_state`: each parameter with ``requires_grad`` outside the
  towers, and the floating-point buffers of the modules holding them: the heads, fusion...), its start side the
  network *as loaded* from ``init_from``. Stage 1 froze the towers, so ``alpha = 0`` is then exactly the stage-1
  network: the fallback when validation says the fine-tune does not pay. Buffers of modules with no trained
  parameter (e.g. the BM25 statistics) are data, not mixed.

``alpha = 1`` is the fine-tuned model; without ``init_from``, ``alpha = 0`` is the pretrained towers under the
fine-tuned heads.

How ``alpha`` is chosen (:class:`WiseFTSelection`, ``model.wise_ft: true``): every validation epoch, in the
validation pass, the validation products are embedded under each ``alpha`` of a small grid and ranked for the same
queries the scorer choice uses (the category table through ``ClipIta.encode_query_texts``, split into the trained
and the pseudo-novel leaves by ``ClipIta.novel_mask``). With the one-standard-error rule of
:mod:`lightning_modules.one_standard_error` (:func:`~lightning_modules.one_standard_error.best_point`), preferring the
fine-tuned model (``alpha`` from 1 down):

1. the *allowed* mixes are those whose mAP@10 on the trained validation queries is within one standard error of the
   best one (protecting the novel categories may not cost the seen ones more than noise);
2. among them, the chosen ``alpha`` is the first within one standard error of the best on the *pseudo-novel*
   validation queries; with fewer of them than ``min_queries``, the first (highest ``alpha``) allowed mix: the seen
   validation alone decides.

The choice and its evidence go into ``ClipIta.retrieval`` (:data:`WISE_FT_ALPHA`, :data:`EVIDENCE_KEY`), hence into the
checkpoint; the checkpoint's ``state_dict`` keeps the fine-tuned weights, its record the start side of the non-tower
tensors (``wise_ft_start``, with ``init_from``), and :func:`lightning_modules.checkpointing.load_model` applies the mix,
the towers' start side being the tower rebuilt from its name (so WiSE-FT needs named pretrained weights, not
``image_weights: none``). The LightningModule's test and predict apply it the same way, and put the fine-tuned weights
back afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from clipita_core.weights import WISE_FT_ALPHA, RetrievalWeights

from .metrics import CategoryRetrievalMetrics
from .one_standard_error import best_point, check_grid

EVIDENCE_KEY = "wise_ft"  # in the retrieval record: the validation evidence (RetrievalWeights.evidence)
TOWERS = ("image_encoder", "text_encoder")
State = dict[str, torch.Tensor]


def tower_state(net: nn.Module) -> State:
    """A copy of the floating-point state of ``net``'s trained towers (``{"image_encoder.backbone...": tensor}``)."""
    state: State = {}
    for name in TOWERS:
        tower = getattr(net, name, None)
        if tower is None or not tower.trainable:
            continue
        for key, value in tower.state_dict().items():
            if value.is_floating_point():
                state[f"{name}.{key}"] = value.detach().clone()
    return state


def head_state(net: nn.Module) -> State:
    """A copy of the tensors outside the towers that training changes: each parameter with ``requires_grad`` and the
    floating-point buffers of the modules holding one (``{"category_head.0.weight": tensor}``)."""
    state: State = {}
    for name, module in net.named_modules():
        if name.split(".")[0] in TOWERS:
            continue
        params = [(k, p) for k, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not params:
            continue
        buffers = [(k, b) for k, b in module.named_buffers(recurse=False) if b.is_floating_point()]
        for key, value in params + buffers:
            state[f"{name}.{key}" if name else key] = value.detach().clone()
    return state


def current_state(net: nn.Module, keys) -> State:
    """A copy of ``net``'s tensors named ``keys`` (the fine-tuned side of a mix)."""
    own = net.state_dict()
    return {key: own[key].detach().clone() for key in keys}


@torch.no_grad()
def set_mix(net: nn.Module, pretrained: State, finetuned: State, alpha: float) -> None:
    """Write ``theta(alpha)`` into ``net`` in place over ``finetuned``'s keys (``alpha = 1``: the fine-tuned tensors
    exactly, ``alpha = 0``: the start ones)."""
    own = net.state_dict(keep_vars=True)
    for key, ft in finetuned.items():
        target = own[key]
        if alpha == 1.0:
            target.copy_(ft)
        elif alpha == 0.0:
            target.copy_(pretrained[key])
        else:
            target.copy_(torch.lerp(pretrained[key].to(ft), ft, float(alpha)))


def check_mixable(net: nn.Module) -> None:
    """WiSE-FT needs each fine-tuned tower's pretrained weights to be rebuildable from its name."""
    image = getattr(net, "image_encoder", None)
    if image is not None and image.trainable and image.image_weights == "none":
        raise ValueError(
            "model.wise_ft mixes the fine-tuned image tower with its pretrained weights, but image_weights is "
            "'none' (random init, not rebuildable): name the pretrained weights (a package, 'hub' or a file)"
        )
    if not tower_state(net):
        raise ValueError(
            "model.wise_ft needs a fine-tuned tower (model.net.train_image_blocks / train_text_layers)"
        )


def apply_wise_ft(net: nn.Module, start: State) -> float:
    """Apply the mix recorded in ``net.retrieval`` (if any) to ``net``'s tensors named in ``start`` (the start side:
    the pretrained towers, with ``init_from`` also the heads as loaded), ``net`` taken as the fine-tuned weights;
    returns the ``alpha`` applied (1.0: nothing changed)."""
    scorer = getattr(net, "scorer", None)
    alpha = 1.0 if scorer is None else scorer.weights.alpha
    if alpha != 1.0:
        set_mix(net, start, current_state(net, start), alpha)
    return alpha


def choose_alpha(
    grid: Sequence[float], seen: torch.Tensor, novel: torch.Tensor, min_queries: int = 1
) -> tuple[float, dict[str, Any]]:
    """The rule of the module docstring. ``grid`` descending (preferred first); ``seen`` ``[A, n]`` and ``novel``
    ``[A, m]`` per-query validation mAP@10 under each mix."""
    allowed = list(range(len(grid)))
    detail: dict[str, Any] = {}
    if seen.numel() and seen.shape[1] > 0:
        best_seen, seen_detail = best_point(seen)
        se = seen_detail["se_to_best"]
        means = seen.double().mean(dim=1)
        allowed = [i for i in allowed if float(means[best_seen] - means[i]) <= se[i] + 1e-12]
        detail["seen_allowed"] = [grid[i] for i in allowed]
    m = novel.shape[1] if novel.ndim == 2 else 0
    if m < max(1, min_queries):
        detail["reason"] = (
            f"{m} pseudo-novel validation queries (fewer than {max(1, min_queries)}): the highest alpha within "
            "1 SE of the best seen"
        )
        return grid[allowed[0]], detail
    index, novel_detail = best_point(novel[allowed])
    detail["reason"] = "val mAP@10 of the pseudo-novel categories among mixes within 1 SE of the best seen"
    detail["novel_se_to_best"] = novel_detail.get("se_to_best")
    return grid[allowed[index]], detail


class WiseFTSelection:
    """Embeds each validation batch under every mix of the grid, in the validation pass, and chooses ``alpha``.

    Args:
        net: the network; its trained towers' weights as built now are the pretrained side.
        grid: the mixes tried (in [0, 1]).
        min_queries: see :func:`choose_alpha`.

    :meth:`set_start` (the module calls it once ``model.init_from`` is loaded) adds the heads as loaded to the start
    side (:attr:`origin`, the whole start side; the heads empty without it).
    """

    def __init__(self, net: nn.Module, grid: Sequence[float], min_queries: int = 1) -> None:
        check_mixable(net)
        self.grid = sorted(check_grid(grid), reverse=True)
        self.min_queries = max(1, int(min_queries))
        self.pretrained = tower_state(net)
        self.start_heads: State = {}
        self.start_weights: RetrievalWeights | None = None  # the scorer the start network was chosen with
        self.finetuned: State = {}
        self.metrics: list[CategoryRetrievalMetrics] = []
        self.queries: list[torch.Tensor] = []

    def set_start(self, net: nn.Module, weights: RetrievalWeights | None = None) -> None:
        """Take ``net``'s heads as they are now (just loaded from ``init_from``) as the start side of the mix, and
        ``weights`` (the scorer its run chose) as what ``alpha = 0`` is scored with."""
        self.start_heads = head_state(net)
        self.start_weights = weights

    @property
    def origin(self) -> State:
        """The start side of the mix: the pretrained towers and the heads as loaded (with ``init_from``)."""
        return {**self.pretrained, **self.start_heads}

    def _mixes(self, net: nn.Module):
        """Yield each ``(index, alpha)`` with the towers set to that mix; the fine-tuned weights back at the end."""
        try:
            start = self.origin
            for i, alpha in enumerate(self.grid):
                set_mix(net, start, self.finetuned, alpha)
                yield i, alpha
        finally:
            set_mix(net, {}, self.finetuned, 1.0)

    @torch.no_grad()
    def start(self, net: nn.Module, encode_queries: Callable[[], torch.Tensor]) -> None:
        """Fix this epoch's fine-tuned weights and each mix's queries (``encode_queries``: the module's query
        vectors, under the scorer chosen so far; they change with the mix only when the text tower is trained)."""
        self.finetuned = current_state(net, self.origin)
        device = next(iter(self.finetuned.values())).device
        self.pretrained = {k: v.to(device) for k, v in self.pretrained.items()}
        self.start_heads = {k: v.to(device) for k, v in self.start_heads.items()}
        self.metrics, self.queries = [], []
        for _ in self._mixes(net):
            queries = encode_queries()
            metric = CategoryRetrievalMetrics(
                ks=(10,), max_rank=10, ndcg_ks=(), recall_ks=(), ap_normalization="min_r_k"
            ).to(queries.device)
            metric.set_queries(queries, query_ids=torch.arange(queries.shape[0], device=queries.device))
            self.metrics.append(metric)
            self.queries.append(queries)

    @torch.no_grad()
    def update(self, net: nn.Module, batch: dict, lexical_query: Any = None) -> None:
        """Fold a validation batch in under every mix (scored as the module's evaluation scores it)."""
        tokens = batch.get("lexical_tokens")
        for i, _ in self._mixes(net):
            vectors = net.encode_product_for_retrieval(batch)
            if lexical_query is not None and tokens is not None:
                scores = net.score(self.queries[i], vectors, lexical_query, tokens)
                self.metrics[i].update_scores(scores, batch["category_ids"])
            else:
                self.metrics[i].update(vectors, batch["category_ids"])

    def compute(self, novel: torch.Tensor, epoch: int | None = None) -> dict[str, Any]:
        """``{WISE_FT_ALPHA: alpha, EVIDENCE_KEY: evidence}`` from the epoch's per-query mAP@10 (``novel``: ``[Q]``, the
        network's novel mask over the query rows)."""
        ap = torch.stack([m.compute_per_query()["map@10"].cpu() for m in self.metrics])  # [A, Q]
        novel = novel.cpu()
        measured = ~torch.isnan(ap[0])
        seen_v, novel_v = ap[:, measured & ~novel], ap[:, measured & novel]
        alpha, detail = choose_alpha(self.grid, seen_v, novel_v, self.min_queries)

        def means(values: torch.Tensor) -> list[float | None]:
            return (
                [float(v) for v in values.double().mean(dim=1)]
                if values.shape[1]
                else [None] * len(self.grid)
            )

        evidence = {
            "grid": list(self.grid),
            "rule": "1-SE: mixes within one SE of the best seen mAP@10, then the first (alpha from 1 down) within "
            "one SE of the best pseudo-novel mAP@10 (too few pseudo-novel queries: the first of those mixes)",
            "mixed": "whole network (start: init_from)"
            if self.start_heads
            else "towers",  # what describe() names
            "val_seen_map@10": means(seen_v),
            "val_novel_map@10": means(novel_v),
            "seen_queries": int(seen_v.shape[1]),
            "novel_queries": int(novel_v.shape[1]),
            **detail,
        }
        if epoch is not None:
            evidence["epoch"] = int(epoch)
        return {WISE_FT_ALPHA: float(alpha), EVIDENCE_KEY: evidence}


def describe(record: dict[str, Any]) -> str:
    """One line: the mix chosen and what validation said of each."""
    evidence = record.get(EVIDENCE_KEY) or {}
    rows = zip(
        evidence.get("grid", []),
        evidence.get("val_seen_map@10", []),
        evidence.get("val_novel_map@10", []),
        strict=False,
    )

    def show(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    per = ", ".join(f"{a:g}: seen {show(s)} novel {show(n)}" for a, s, n in rows)
    mixed = evidence.get("mixed", "towers")
    alpha = record.get(WISE_FT_ALPHA, 1.0)
    return f"WiSE-FT alpha {alpha:g} of the {mixed} chosen ({evidence.get('reason', 'default')}; val mAP@10 {per})"
