"""The scorer (:class:`lightning_modules.scoring.Scorer`, owned by the network as ``net.scorer``): its score is the
documented formula of its :class:`~clipita_core.weights.RetrievalWeights`, and a real checkpoint's record reads into
those weights and back unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from synthetic_catalogue import TRAIN_PATHS, TREE, LexicalDataModule, SyntheticDataModule, tiny_net, trainer

from clipita_core.weights import RetrievalWeights
from lightning_modules import ClipItaModule, HierarchicalInfoNCELoss, load_model
from lightning_modules.checkpointing import KEY
from lightning_modules.scorer_choice import CHOICE_KEY
from lightning_modules.scoring import Scorer

NET = dict(
    modalities=["image", "title"],
    embed_dim=384,
    category_head="residual",
    route_novel_categories=True,
    category_text="leaf",
)
WEIGHTS = {  # every weight non-zero, seen and novel different
    "seen_title_weight": 0.2,
    "novel_title_weight": 0.6,
    "seen_image_weight": 0.3,
    "novel_image_weight": 0.5,
    "seen_lexical_weight": 0.4,
    "novel_lexical_weight": 0.7,
    "novel_parent_weight": 0.25,
    "descendant_weight": 0.35,
    "wise_ft_alpha": 0.9,  # no fine-tuned tower here: the score does not use it
}


def hand_score(net, texts, paths, batch) -> torch.Tensor:
    """The module docstring's formula, term by term: for a query q with its side's weights (w, v, l),

    (1 - w)(1 - v) <category(q), fused(p)> + (1 - w) v <category(q), image(p)> + w <name(q), title(p)> + l bm25n(q, p)

    plus, on the dense part, lambda times the closest trained ancestor's (as a seen query) for a novel q and beta
    times the mean of its trained strict descendants' (as seen queries)."""
    views = net.encode_product_views(batch)
    title = F.normalize(batch["title_features"], dim=-1)
    trained = [tuple(p) for p in net.trained_categories]

    def dense(text: str, side: str) -> torch.Tensor:
        w, v = WEIGHTS[f"{side}_title_weight"], WEIGHTS[f"{side}_image_weight"]
        category = net.encode_category_texts([text])[0]
        name = F.normalize(net.text_encoder([text]), dim=-1)[0]
        return (
            (1 - w) * (1 - v) * (category @ views["product"].T)
            + (1 - w) * v * (category @ views["image"].T)
            + (w * (name @ title.T))
        )

    rows = []
    for text, path in zip(texts, paths, strict=True):
        side = "seen" if tuple(path) in trained else "novel"
        row = dense(text, side)
        ancestors = [path[:d] for d in range(len(path) - 1, 0, -1) if path[:d] in trained]
        if side == "novel" and ancestors:
            row = row + WEIGHTS["novel_parent_weight"] * dense(ancestors[0][-1], "seen")
        below = [p for p in trained if len(p) > len(path) and p[: len(path)] == tuple(path)]
        if below:
            row = row + WEIGHTS["descendant_weight"] * torch.stack(
                [dense(p[-1], "seen") for p in below]
            ).mean(0)
        bm25 = net.lexical.scores(net.lexical.query_weights([text]), batch["lexical_tokens"])[0]
        rows.append(row + WEIGHTS[f"{side}_lexical_weight"] * bm25)
    return torch.stack(rows)


def test_the_score_is_the_documented_formula_of_the_weights() -> None:
    torch.manual_seed(0)
    net = tiny_net(**NET, image_evidence=True, lexical_signal=True).eval()
    assert isinstance(net.scorer, Scorer) and net.scorer.net is net
    dm = LexicalDataModule(net)
    net.lexical.set_statistics(dm.lexical_statistics)
    net.set_trained_categories(sorted({p[:d] for p in TRAIN_PATHS for d in range(1, len(p) + 1)}))
    paths = list(TREE.paths)
    texts = [p[-1] for p in paths]
    novel = net.novel_mask(texts, paths)
    assert novel.any() and not novel.all()  # both sides' weights are used
    batch = dm.eval_batch

    def score() -> torch.Tensor:
        with torch.no_grad():
            return net.score(
                net.encode_query_texts(texts, paths),
                net.encode_product_for_retrieval(batch),
                net.lexical_query(texts, paths),
                batch["lexical_tokens"],
            )

    default = score()
    net.retrieval = WEIGHTS
    assert net.scorer.weights == RetrievalWeights(**WEIGHTS) and dict(net.retrieval) == WEIGHTS
    scores = score()
    with torch.no_grad():
        expected = hand_score(net, texts, paths, batch)
    assert not torch.allclose(scores, default, atol=1e-3)  # the weights change the score
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_a_real_checkpoint_record_round_trips_through_the_weights(tmp_path) -> None:
    torch.manual_seed(0)
    net = tiny_net(**NET)
    module = ClipItaModule(
        net,
        HierarchicalInfoNCELoss(temperature=0.1),
        lr=1e-2,
        scheduler="none",
        choose_scorer=True,
        choose_taxonomy=True,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, enable_checkpointing=True, callbacks=[checkpoint], max_epochs=1).fit(
        module, datamodule=SyntheticDataModule(net)
    )
    path = tmp_path / "ckpt" / "last.ckpt"
    stored = torch.load(path, map_location="cpu", weights_only=True)
    record = stored[KEY]["retrieval"]
    assert {"seen_title_weight", "novel_title_weight", "novel_parent_weight", "descendant_weight"} <= set(
        record
    )
    assert CHOICE_KEY in record
    weights = RetrievalWeights.from_dict(record)
    assert weights.to_dict() == record and set(weights.to_dict()) == set(record)
    assert load_model(path).scorer.weights == weights == net.scorer.weights

    # an older record without the weights (one policy: the defaults) loads and scores as a fresh network would
    stored[KEY]["retrieval"] = {CHOICE_KEY: record[CHOICE_KEY]}
    torch.save(stored, tmp_path / "old.ckpt")
    old = load_model(tmp_path / "old.ckpt")
    assert old.scorer.weights == RetrievalWeights(evidence={CHOICE_KEY: record[CHOICE_KEY]})
    assert dict(old.retrieval) == {CHOICE_KEY: record[CHOICE_KEY]}
    assert old.scorer.title_weights() == (0.0, 1.0) and old.scorer.taxonomy_weights() == (0.0, 0.0)
