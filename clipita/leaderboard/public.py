"""The public-protocol block (issue 19.7): the numbers public Fashion Product Images leaderboards report, beside ours.

For each row named in the spec's ``public_block: {rows: [...]}``, on each split seed:

- **the model** is the row's served checkpoint, read back from the runs folder (:func:`served_checkpoint`: the
  refit's best checkpoint with ``refit_after_choice``, else the run's best), so the block can be computed after
  the fact (``clipita leaderboard <yaml> --public_only true``) as well as at the end of a run;
- **the gallery** is every product the row did not train on: the val + test products of the checkpoint's split
  (the data options it records), less every product a checkpoint of its chain trained on (the served one and the
  ones it started from, ``model.init_from``, recursively: :func:`trained_products`). The adaptive recipe's refit
  trains on the pseudo-novel validation leaves too; its split (``pseudo_novel_fraction`` 0) has them in train, so
  they are not in the gallery;
- **the queries** are the plain category labels: each node's own name ("Tshirts"), encoded and scored as
  ``clipita search "Tshirts"`` does it (:class:`clipita.retrieval.search.CategoryEncoder`: the name resolved on the
  tree, the checkpoint's category tower, ``ClipIta.score`` with its BM25/title/tree terms), over product vectors
  from ``clipita index`` of that checkpoint (its own towers: a fine-tuned tower re-encodes the images);
- **relevance** is the project's one rule (:func:`lightning_modules.metrics.relevant_categories`, hierarchical:
  a product is relevant to every node on its path);
- **metrics**: P@1, P@10 and MRR@10 (the reciprocal rank of the first relevant product within the top 10, else 0),
  per query, averaged per level (``general``, ``level-N``, ``specific`` = leaves) and over all nodes; queries with
  no relevant gallery product are left out. Mean ± sample std over split seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .spec import LeaderboardSpec, RowSpec
from .statistics import seed_summary

PUBLIC_FILE = "public.json"
PUBLIC_TITLE = "Public protocol: plain labels, gallery = all products the row did not train on"
PUBLIC_METRICS: tuple[tuple[str, str], ...] = (("p@1", "P@1"), ("p@10", "P@10"), ("mrr@10", "MRR@10"))
PUBLIC_K = 10
GALLERY_SPLITS = ("val", "test")


def public_summary(per_seed: dict[str, Any]) -> dict[str, Any]:
    """Mean ± std over the seeds of ``per_seed`` (``{seed: {"levels": {level: {metric: value}}}}``), per level."""
    levels = list(next(iter(per_seed.values()))["levels"])
    return {
        g: {m: seed_summary([s["levels"][g][m] for s in per_seed.values()]) for m, _ in PUBLIC_METRICS}
        for g in levels
    }


# ----------------------------------------------------------------------------------------- the row's checkpoints
def served_checkpoint(runs_dir: Path, row: RowSpec, seed: int) -> Path | None:
    """The checkpoint a trained row serves (and was tested with) on one split seed: its refit's best checkpoint
    when it refit (``<slug>/seed<s>_refit``), else its run's (``<slug>/seed<s>``); None when neither exists."""
    from lightning_modules.checkpointing import tested_checkpoint

    from .runner import refit_folder, run_folder

    for folder in (refit_folder(runs_dir, row, seed), run_folder(runs_dir, row, seed)):
        found = tested_checkpoint(folder)
        if found is not None:
            return found
    return None


def checkpoint_chain(ckpt: str | Path) -> list[Path]:
    """``ckpt`` and the checkpoints it started from (``model.init_from``, recorded in its hyperparameters)."""
    from lightning_modules.checkpointing import read_checkpoint

    chain = [Path(ckpt)]
    while len(chain) < 16:
        source = (read_checkpoint(chain[-1]).get("hyper_parameters") or {}).get("init_from")
        if not source:
            break
        chain.append(Path(str(source)))
    return chain


def _datamodule(ckpt: str | Path) -> Any:
    """The DataModule of the data a checkpoint trained on (its recorded options), its shards read (no features)."""
    from clipita.retrieval.index import checkpoint_data_options, datamodule_kwargs
    from datamodules.catalogue_datamodule import CatalogueDataModule

    options = datamodule_kwargs(checkpoint_data_options(ckpt), str(ckpt))
    options.pop("encoders", None)
    dm = CatalogueDataModule(**options)
    dm.read_catalogue()
    return dm


def trained_products(ckpt: str | Path) -> set[str]:
    """The ids of the products a checkpoint's weights trained on: the train split of its own data and of every
    checkpoint it started from (:func:`checkpoint_chain`)."""
    from clipita.retrieval.shard_metadata import products_frame

    out: set[str] = set()
    for link in checkpoint_chain(ckpt):
        dm = _datamodule(link)
        out |= {str(i) for i in products_frame(dm.manifest, dm.shard_dir, ["train"])["id"]}
    return out


# ---------------------------------------------------------------------------------------------- the gallery
def gallery_indexes(ckpt: str | Path, folder: Path, num_threads: int | None = None) -> list[Path]:
    """``clipita index`` of the checkpoint's val and test products (its own towers; resumed when already there)."""
    from clipita.retrieval.index import index

    out = []
    for split in GALLERY_SPLITS:
        target = folder / split
        index(ckpt=str(ckpt), output_dir=str(target), split=split, accelerator="auto", progress=False)
        out.append(target)
    return out


def public_scores(
    ckpt: str | Path, folders: Sequence[Path], exclude: set[str]
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, ...]], list[str], dict[str, int]]:
    """Scores of every node's plain label against the gallery, and the relevance matrix.

    Returns:
        ``(scores [Q, N], relevant [Q, N] bool, node paths, gallery product ids, products per split)``: the
        gallery is the products of ``folders`` (index folders of ``ckpt``) less ``exclude``.
    """
    from clipita.retrieval.search import CategoryEncoder, resolve_category
    from clipita.retrieval.search_index import SearchIndex
    from datamodules.features import LEXICAL_TOKENS
    from lightning_modules.metrics import relevant_categories

    encoder = CategoryEncoder(ckpt)
    blocks, ids, product_paths, per_split = [], [], [], {}
    tree: list[tuple[str, ...]] = []
    labels: list[str] = []
    for folder in folders:
        index = SearchIndex.load(folder)
        if not tree:
            tree = [tuple(p) for p in index.tree]
            labels = [p[-1] for p in tree]  # the plain category label: the node's own name
            paths = [resolve_category(label, tree) for label in labels]
            query = encoder.encode(labels, paths)
            score, _ = encoder.scorer(labels, paths)
        products = index.products
        keep = np.flatnonzero(~products["id"].astype(str).isin(exclude).to_numpy())
        vectors = torch.as_tensor(np.asarray(index.embeddings[keep]))
        tokens = torch.as_tensor(np.asarray(index.array(LEXICAL_TOKENS)[keep])) if score is not None else None
        with torch.no_grad():
            scores = score(query, vectors, tokens) if score is not None else query @ vectors.T
        blocks.append(scores.float().cpu())
        ids += [str(i) for i in products["id"].iloc[keep]]
        product_paths += [tuple(json.loads(p)) for p in products["category_path"].iloc[keep]]
        per_split[folder.name] = len(keep)
    node = {p: i for i, p in enumerate(tree)}
    depth = max(len(p) for p in tree)
    ancestors = torch.full((len(ids), depth), -1, dtype=torch.long)
    for n, path in enumerate(product_paths):
        for level in range(len(path)):
            ancestors[n, level] = node[path[: level + 1]]
    relevant_to = relevant_categories(
        ancestors, "hierarchical"
    )  # [N, L]: the nodes each product is relevant to
    relevant = (relevant_to.T.unsqueeze(0) == torch.arange(len(tree))[:, None, None]).any(dim=1)
    return torch.cat(blocks, dim=1), relevant, tree, ids, per_split


def public_metrics(scores: torch.Tensor, relevant: torch.Tensor, k: int = PUBLIC_K) -> dict[str, np.ndarray]:
    """Per query P@1, P@k and MRR@k of the ranking by ``scores`` (the project's tie rule: lower row first), NaN for
    a query with no relevant product; plus ``num_relevant``."""
    from lightning_modules.metrics.ranking import select_topk
    from lightning_modules.metrics.retrieval_functional import precision_at_k, reciprocal_rank

    _, rows = select_topk(scores, min(k, scores.shape[1]))
    top = relevant.gather(1, rows)
    num_relevant = relevant.sum(dim=1)
    values = {
        "p@1": precision_at_k(top, 1),
        f"p@{k}": precision_at_k(top, k),
        f"mrr@{k}": reciprocal_rank(top[:, :k]),
    }
    out = {m: torch.where(num_relevant > 0, v, torch.nan).double().numpy() for m, v in values.items()}
    out["num_relevant"] = num_relevant.double().numpy()
    return out


def level_groups(tree: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """``all``, ``general`` (top level), ``level-N`` (the levels between) and ``specific`` (leaves) masks."""
    depth = np.array([len(p) for p in tree])
    parents = {tuple(p[:-1]) for p in tree if len(p) > 1}
    leaves = np.array([tuple(p) not in parents for p in tree])
    groups = {"all": np.ones(len(tree), bool), "general": depth == 1}
    for d in range(2, int(depth.max())):
        groups[f"level-{d}"] = depth == d
    groups["specific"] = leaves
    return groups


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


# ------------------------------------------------------------------------------------------------- the block
def public_block(
    spec: LeaderboardSpec,
    runs_dir: Path,
    seeds: Sequence[int],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The public-protocol numbers of ``spec.public_rows`` on ``seeds``, from their kept checkpoints under
    ``runs_dir`` (a row without a checkpoint on a seed is reported as not run)."""
    rows: dict[str, Any] = {}
    for name in spec.public_rows:
        row = spec.row(name)
        per_seed: dict[str, Any] = {}
        missing = []
        for seed in seeds:
            ckpt = served_checkpoint(runs_dir, row, seed)
            if ckpt is None:
                missing.append(seed)
                continue
            log(f"[leaderboard {spec.name}] public protocol, split seed {seed}: {name} ({ckpt})")
            trained = trained_products(ckpt)
            folders = gallery_indexes(ckpt, runs_dir / row.slug / "public" / f"seed{seed}")
            scores, relevant, tree, ids, per_split = public_scores(ckpt, folders, trained)
            values = public_metrics(scores, relevant)
            groups = level_groups(tree)
            (runs_dir / row.slug / "public" / f"seed{seed}" / "gallery.json").write_text(json.dumps(ids))
            indexed = sum(len(json.loads((f / "product_ids.json").read_text())) for f in folders)
            per_seed[str(seed)] = {
                "checkpoint": str(ckpt),
                "trained_from": [str(p) for p in checkpoint_chain(ckpt)],
                "gallery": {
                    "size": len(ids),
                    "per_split": per_split,
                    "excluded_trained": indexed - len(ids),
                    "trained_products": len(trained),
                },
                "levels": {
                    g: {
                        **{m: _mean(values[m][mask]) for m, _ in PUBLIC_METRICS},
                        "queries": int(np.isfinite(values["p@1"][mask]).sum()),
                    }
                    for g, mask in groups.items()
                },
            }
        entry: dict[str, Any] = {"per_seed": per_seed}
        if missing:
            entry["missing"] = (
                f"no checkpoint under {runs_dir / row.slug} for split seed(s) {missing} (run the row first)"
            )
        if per_seed:
            entry["summary"] = public_summary(per_seed)
        rows[name] = entry
    return {
        "protocol": PUBLIC_TITLE,
        "queries": 'every node of the category tree by its own name, encoded as `clipita search "<name>"` does',
        "gallery": "the val + test products of the served checkpoint's split seed, less every product any "
        "checkpoint of the row (the served one and those it started from) trained on",
        "relevance": "hierarchical: a product is relevant to every node on its category path",
        "metrics": "P@1, P@10, MRR@10 (0 when no relevant product is in the top 10); per query, averaged per "
        "level; queries with no relevant gallery product left out; mean ± sample std over split seeds",
        "split_seeds": list(seeds),
        "rows": rows,
    }


def _cell(cell: dict[str, Any], seeds: int) -> str:
    mean = cell.get("mean")
    if mean is None or math.isnan(mean):  # NaN is stored as null in JSON
        return "–"
    return f"{mean:.3f}" + (f" ± {cell['std']:.3f}" if seeds > 1 and cell.get("std") is not None else "")


def public_section(document: dict[str, Any]) -> list[str]:
    """The report's markdown section for a public-protocol document (empty when there is none)."""
    if not document or not document.get("rows"):
        return []
    seeds = document["split_seeds"]
    lines = [
        f"## {PUBLIC_TITLE}",
        "",
        "The metrics public Fashion Product Images leaderboards report, beside our protocol: queries are "
        f"{document['queries']}; the gallery is {document['gallery']}; relevance is {document['relevance']}; "
        f"{document['metrics']}. Numbers in `{PUBLIC_FILE}`. Published galleries are often the whole catalogue "
        "(about 44k products) or a fixed test split: compare with the gallery sizes below in mind.",
        "",
    ]
    header = ["Model", "level"] + [label for _, label in PUBLIC_METRICS] + ["queries"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sizes = []
    for name, entry in document["rows"].items():
        if "summary" not in entry:
            lines.append(f"| {name} | {entry.get('missing', 'not run')} |" + " |" * (len(header) - 2))
            continue
        for level, cells in entry["summary"].items():
            text = [_cell(cells[m], len(seeds)) for m, _ in PUBLIC_METRICS]
            queries = sorted({s["levels"][level]["queries"] for s in entry["per_seed"].values()})
            lines.append(f"| {name} | {level} | " + " | ".join(text) + f" | {'/'.join(map(str, queries))} |")
        if entry.get("missing"):
            lines.append(f"| {name} | {entry['missing']} |" + " |" * (len(header) - 2))
        for seed, s in entry["per_seed"].items():
            g = s["gallery"]
            split_text = " + ".join(f"{split} {n}" for split, n in g["per_split"].items())
            sizes.append(
                f"| {name} | {seed} | {g['size']} | {split_text} | {g['excluded_trained']} | "
                f"`{s['checkpoint']}` |"
            )
    lines += [
        "",
        "Gallery per row and split seed (products; `excluded` = val/test products a checkpoint of the row trained "
        "on, removed):",
        "",
        "| Model | seed | gallery | val + test | excluded | served checkpoint |",
        "|---|---|---|---|---|---|",
        *sizes,
        "",
    ]
    return lines
