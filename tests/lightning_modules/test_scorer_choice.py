"""Choosing the scorer from evidence: the title-match weights are chosen on validation, kept in the checkpoint,
restored by ``load_model`` and used by the one query encoder; without titles the choice is the trained towers."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from synthetic_catalogue import TREE, UNSEEN_PATHS, SyntheticDataModule, tiny_net, trainer

from clipita_core.weights import DESCENDANT_WEIGHT, NOVEL_PARENT_WEIGHT
from lightning_modules import ClipItaModule, HierarchicalInfoNCELoss, load_model
from lightning_modules.scorer_choice import (
    CHOICE_KEY,
    TAXONOMY_GRID,
    choose,
    describe,
    grid_points,
)

# the network options of the adaptive recipe, in one place (model.net.* of experiments/clip_ita_adaptive.yaml)
ADAPTIVE_NET = dict(
    modalities=["image", "title"],
    embed_dim=384,
    category_head="residual",
    route_novel_categories=True,
    category_text="leaf",
)


class TitlelessDataModule(SyntheticDataModule):
    """The synthetic catalogue with no product titles (zero title features, ``title_mask`` False)."""

    def __init__(self, net) -> None:
        super().__init__(net)
        for batch in [*self.train_batches, self.eval_batch]:
            batch["title_features"] = torch.zeros_like(batch["title_features"])
            batch["title_mask"] = torch.zeros(len(batch["product_id"]), dtype=torch.bool)


def fit(tmp_path, datamodule_class=SyntheticDataModule, epochs: int = 2, module_options=None, **net_options):
    torch.manual_seed(0)
    net = tiny_net(**{**ADAPTIVE_NET, **net_options})
    module = ClipItaModule(
        net,
        HierarchicalInfoNCELoss(temperature=0.1),
        lr=1e-2,
        scheduler="none",
        choose_scorer=True,
        **(module_options or {}),
    )
    dm = datamodule_class(net)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    run = trainer(tmp_path, enable_checkpointing=True, callbacks=[checkpoint], max_epochs=epochs)
    run.fit(module, datamodule=dm)
    return module, dm, run, tmp_path / "ckpt" / "last.ckpt"


def test_choice_and_its_fallbacks() -> None:
    grid = [0.0, 0.5, 1.0]
    clear = torch.tensor([[0.1, 0.2, 0.1, 0.2], [0.3, 0.4, 0.3, 0.4], [0.8, 0.9, 0.8, 0.9]])
    record = choose(grid, clear.flip(0), clear, titles_present=10)
    assert (record["seen_title_weight"], record["novel_title_weight"]) == (0.0, 1.0)
    no_titles = choose(grid, clear, clear, titles_present=0)
    assert (no_titles["seen_title_weight"], no_titles["novel_title_weight"]) == (0.0, 0.0)
    assert "no product titles" in no_titles[CHOICE_KEY]["novel_reason"]
    no_novel = choose(grid, clear, torch.zeros(3, 0), titles_present=5, default_novel=1.0)
    assert no_novel["novel_title_weight"] == 1.0 and "no novel" in no_novel[CHOICE_KEY]["novel_reason"]
    assert "novel-category scorer: title weight 1 chosen" in describe(record)


def test_query_is_the_convex_mix_of_towers_and_title_match() -> None:
    net = tiny_net(**ADAPTIVE_NET)
    net.set_trained_categories([("Bags",), ("Bags", "Totes")])
    paths = [("Bags", "Totes"), ("Shoes", "Sandals")]  # trained, novel
    with torch.no_grad():
        default = net.encode_query_paths(paths)
        d = default.shape[1] // 2
        assert torch.count_nonzero(default[0, d:]) == 0 and torch.count_nonzero(default[1, :d]) == 0
        net.retrieval = {**net.retrieval, "seen_title_weight": 0.25, "novel_title_weight": 0.0}
        mixed = net.encode_query_paths(paths)
        names = torch.nn.functional.normalize(net.text_encoder([p[-1] for p in paths]), dim=-1)
        category = net.encode_category_texts([p[-1] for p in paths])
    assert torch.allclose(mixed[0], torch.cat([0.75 * category[0], 0.25 * names[0]]), atol=1e-6)
    assert torch.allclose(mixed[1], torch.cat([category[1], torch.zeros_like(names[1])]), atol=1e-6)
    with pytest.raises(ValueError, match="novel_title_weight"):
        net.retrieval = {**net.retrieval, "novel_title_weight": 1.5}


def test_choice_is_kept_in_the_checkpoint_and_used_by_load_model(tmp_path) -> None:
    module, dm, run, path = fit(tmp_path)
    retrieval = module.net.retrieval
    evidence = retrieval[CHOICE_KEY]
    novel = [p for p in TREE.paths if p not in module.net.trained_categories]
    assert (
        evidence["novel_queries"] == len(novel) == len(UNSEEN_PATHS) + 1
    )  # + "Watches", whose leaf is novel
    assert evidence["grid"] == [0.0, 0.25, 0.5, 0.75, 1.0] and evidence["epoch"] == 1
    assert (
        retrieval["novel_title_weight"] in evidence["grid"]
        and retrieval["seen_title_weight"] in evidence["grid"]
    )
    logged = run.callback_metrics
    assert "val/specific_novel/map@10" in logged and "val/specific_seen/map@10" in logged
    assert float(logged["val/scorer_novel_title_weight"]) == retrieval["novel_title_weight"]

    loaded = load_model(path)
    assert loaded.retrieval == retrieval
    run.test(module, datamodule=dm, verbose=False)  # the module's test path
    with torch.no_grad():
        test_queries = module.query_embeddings()
        assert torch.allclose(
            loaded.encode_query_texts(module.queries.texts, module.queries.paths), test_queries
        )
        assert torch.allclose(loaded.encode_query_paths(TREE.paths), test_queries, atol=1e-6)
        # a different choice changes the vectors: the record is really what scores
        loaded.retrieval = {
            **loaded.retrieval,
            "novel_title_weight": 1.0 - loaded.retrieval["novel_title_weight"],
        }
        assert not torch.allclose(loaded.encode_query_paths(TREE.paths), test_queries)


def test_choice_falls_back_to_the_towers_without_titles(tmp_path) -> None:
    module, _, _, path = fit(tmp_path, TitlelessDataModule, epochs=1)
    retrieval = load_model(path).retrieval
    assert retrieval["novel_title_weight"] == 0.0 and retrieval["seen_title_weight"] == 0.0
    assert retrieval[CHOICE_KEY]["titles_present"] == 0
    assert module.net.retrieval == retrieval


def test_choose_scorer_needs_routing() -> None:
    with pytest.raises(ValueError, match="route_novel_categories"):
        ClipItaModule(tiny_net(), choose_scorer=True)


def test_image_only_weight_grid_prefers_the_title_off_then_the_fused_towers() -> None:
    points = grid_points([0.0, 1.0], ["image", "title"])
    assert points == [
        {"title": 0.0, "image": 0.0},
        {"title": 0.0, "image": 1.0},
        {"title": 1.0, "image": 0.0},
        {"title": 1.0, "image": 1.0},
    ]
    # the image alone is clearly best on seen queries; the title is best on novel ones by less than one SE
    seen = torch.tensor(
        [[0.5, 0.6, 0.5, 0.6], [0.9, 0.9, 0.8, 0.9], [0.1, 0.2, 0.1, 0.1], [0.1, 0.1, 0.2, 0.1]]
    )
    novel = torch.tensor(
        [[0.1, 0.3, 0.0, 0.2], [0.1, 0.2, 0.1, 0.2], [0.2, 0.0, 0.3, 0.3], [0.0, 0.1, 0.1, 0.0]]
    )
    record = choose(points, seen, novel, titles_present=10)
    assert (record["seen_title_weight"], record["seen_image_weight"]) == (0.0, 1.0)
    assert (record["novel_title_weight"], record["novel_image_weight"]) == (0.0, 0.0)
    assert "image-only weight 1" in describe(record) and "per (title weight, image-only weight)" in describe(
        record
    )
    # no titles: the title weight is fixed at 0, the image-only weight is still chosen on the evidence
    no_titles = choose(points, seen, seen, titles_present=0)
    assert no_titles["seen_title_weight"] == 0.0 and no_titles["seen_image_weight"] == 1.0
    assert no_titles["novel_title_weight"] == 0.0 and no_titles["novel_image_weight"] == 1.0


def test_image_only_block_makes_the_score_a_convex_mix_and_can_equal_clip_i() -> None:
    net = tiny_net(**ADAPTIVE_NET, image_evidence=True).eval()
    net.set_trained_categories([("Bags",), ("Bags", "Totes")])
    paths = [("Bags", "Totes"), ("Shoes", "Sandals")]  # trained, novel
    batch = {
        "image_features": torch.randn(5, net.image_encoder.output_dim),
        "title_features": torch.randn(5, 384),
    }
    with torch.no_grad():
        products = net.encode_product_for_retrieval(batch)
        assert products.shape[1] == 3 * 384
        views = net.encode_product_views(batch)
        category = net.encode_category_texts([p[-1] for p in paths])
        names = torch.nn.functional.normalize(net.text_encoder([p[-1] for p in paths]), dim=-1)
        title = torch.nn.functional.normalize(batch["title_features"], dim=-1)
        net.retrieval = {
            **net.retrieval,
            "seen_title_weight": 0.0,
            "seen_image_weight": 1.0,
            "novel_title_weight": 0.5,
            "novel_image_weight": 0.5,
        }
        scores = net.encode_query_paths(paths) @ products.T
    # seen: w = 0, v = 1 is CLIP-I's scorer, the image alone against the category tower
    assert torch.allclose(scores[0], category[0] @ views["image"].T, atol=1e-5)
    expected = (
        0.25 * category[1] @ views["product"].T
        + 0.25 * category[1] @ views["image"].T
        + 0.5 * names[1] @ title.T
    )
    assert torch.allclose(scores[1], expected, atol=1e-5)
    with pytest.raises(ValueError, match="seen_image_weight"):
        net.retrieval = {**net.retrieval, "seen_image_weight": -0.1}


def test_image_evidence_weights_are_chosen_logged_and_restored(tmp_path) -> None:
    module, dm, run, path = fit(tmp_path, image_evidence=True)
    retrieval = module.net.retrieval
    evidence = retrieval[CHOICE_KEY]
    assert evidence["signals"] == ["title", "image"] and len(evidence["points"]) == 25
    for key in ("seen_title_weight", "novel_title_weight", "seen_image_weight", "novel_image_weight"):
        assert retrieval[key] in evidence["grid"]
        assert float(run.callback_metrics[f"val/scorer_{key}"]) == retrieval[key]
    assert "train/image_loss" in run.callback_metrics
    loaded = load_model(path)
    assert loaded.retrieval == retrieval and loaded.image_head is not None
    with torch.no_grad():
        assert torch.allclose(loaded.encode_query_paths(TREE.paths), module.query_embeddings(), atol=1e-6)


def test_image_evidence_needs_a_positive_loss_weight() -> None:
    with pytest.raises(ValueError, match="image_loss_weight"):
        ClipItaModule(tiny_net(image_evidence=True), image_loss_weight=0.0)


def test_too_few_queries_keep_the_preferred_scorer() -> None:
    points = grid_points([0.0, 1.0], ["title"])
    lucky = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.1, 0.0]])  # the title match wins on 3 queries by luck
    assert choose(points, lucky, lucky, titles_present=5)["novel_title_weight"] == 1.0
    record = choose(points, lucky, lucky, titles_present=5, min_queries=5)
    assert record["novel_title_weight"] == 0.0 and record["seen_title_weight"] == 0.0
    assert "only 3 validation queries" in record[CHOICE_KEY]["novel_reason"]


def test_lexical_weights_are_chosen_and_scored_through_clip_ita_score(tmp_path) -> None:
    from synthetic_catalogue import LexicalDataModule

    torch.manual_seed(0)
    net = tiny_net(**ADAPTIVE_NET, lexical_signal=True)
    module = ClipItaModule(
        net, HierarchicalInfoNCELoss(temperature=0.1), lr=1e-2, scheduler="none", choose_scorer=True
    )
    dm = LexicalDataModule(net)
    run = trainer(tmp_path, max_epochs=1)
    run.fit(module, datamodule=dm)
    assert net.lexical.fitted and float(net.lexical.num_docs) == 16  # the training split's statistics
    record = net.retrieval
    assert record[CHOICE_KEY]["signals"] == ["title", "lexical"]
    for key in ("seen_lexical_weight", "novel_lexical_weight"):
        assert record[key] in record[CHOICE_KEY]["grid"]
        assert float(run.callback_metrics[f"val/scorer_{key}"]) == record[key]
    # the synthetic titles name their leaf: BM25 alone finds a novel leaf's product first
    net.retrieval = {**net.retrieval, "novel_title_weight": 0.0, "novel_lexical_weight": 1.0}
    run.test(module, datamodule=dm, verbose=False)
    texts, paths = module.queries.texts, module.queries.paths
    with torch.no_grad():
        expected = net.score(
            net.encode_query_texts(texts, paths),
            net.encode_product_for_retrieval(dm.eval_batch),
            net.lexical_query(texts, paths),
            dm.eval_batch["lexical_tokens"],
        )
    ranking = module.rankings["test"]
    assert torch.equal(ranking[:, 0], expected.argmax(dim=1))
    sandals = paths.index(("Shoes", "Sandals"))
    assert dm.eval_batch["product_id"][int(ranking[sandals, 0])] == "p3-4"  # the Sandals product
    net.retrieval = {**net.retrieval, "novel_lexical_weight": 0.0, "seen_lexical_weight": 0.0}
    assert net.lexical_query(texts, paths) is None  # no lexical term: the dense dot product alone


def test_tree_terms_are_chosen_on_validation_kept_and_change_the_right_queries(tmp_path) -> None:
    module, dm, run, path = fit(tmp_path, module_options={"choose_taxonomy": True})
    retrieval = module.net.retrieval
    tree = retrieval[CHOICE_KEY]["tree"]
    assert tree["grid"] == list(TAXONOMY_GRID)
    for key in (NOVEL_PARENT_WEIGHT, DESCENDANT_WEIGHT):
        assert retrieval[key] in TAXONOMY_GRID
        assert len(tree[key]["val_map@10"]) == len(TAXONOMY_GRID)
        assert float(run.callback_metrics[f"val/scorer_{key}"]) == retrieval[key]
    assert "tree terms" in describe(retrieval)
    loaded = load_model(path)
    assert loaded.retrieval == retrieval
    with torch.no_grad():
        assert torch.allclose(loaded.encode_query_paths(TREE.paths), module.query_embeddings(), atol=1e-6)
        loaded.retrieval = {**loaded.retrieval, NOVEL_PARENT_WEIGHT: 0.0, DESCENDANT_WEIGHT: 0.0}
        base = loaded.encode_query_paths(TREE.paths)
        loaded.retrieval = {**loaded.retrieval, NOVEL_PARENT_WEIGHT: 0.5, DESCENDANT_WEIGHT: 0.0}
        parent = loaded.encode_query_paths(TREE.paths)
        loaded.retrieval = {**loaded.retrieval, NOVEL_PARENT_WEIGHT: 0.0, DESCENDANT_WEIGHT: 0.5}
        descendants = loaded.encode_query_paths(TREE.paths)
    novel = loaded.novel_mask([p[-1] for p in TREE.paths], TREE.paths)
    trained = set(loaded.trained_categories)
    has_parent = torch.tensor([any(p[:d] in trained for d in range(1, len(p))) for p in TREE.paths])
    inner = torch.tensor(
        [any(t[: len(p)] == tuple(p) and len(t) > len(p) for t in trained) for p in TREE.paths]
    )
    changed = (parent - base).abs().sum(dim=1) > 0
    assert torch.equal(changed, novel & has_parent) and changed.any()
    changed = (descendants - base).abs().sum(dim=1) > 0
    assert torch.equal(changed, inner) and changed.any()
