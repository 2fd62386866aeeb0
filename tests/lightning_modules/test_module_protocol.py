"""``ClipItaModule`` takes the evaluation protocol the way it takes its network: given to the constructor, or read
from the DataModule in ``setup``, with the same result to the last digit."""

from __future__ import annotations

import pytest
import torch
from synthetic_catalogue import (
    ATTRIBUTES,
    TRAIN_IDS,
    TREE,
    SyntheticDataModule,
    synthetic_protocol,
    tiny_net,
    trainer,
)

from lightning_modules import ClipItaModule, InfoNCELoss

ROUTED = dict(embed_dim=384, category_head="residual", route_novel_categories=True, category_text="path")


def fit_and_test(tmp_path, given: bool) -> tuple[ClipItaModule, dict[str, float]]:
    torch.manual_seed(0)
    net = tiny_net(**ROUTED)
    protocol = synthetic_protocol("path") if given else None
    module = ClipItaModule(net, InfoNCELoss(temperature=0.1), lr=1e-2, scheduler="none", protocol=protocol)
    assert (module.protocol is not None) == given
    dm = SyntheticDataModule(net)
    run = trainer(tmp_path / ("given" if given else "setup"), max_epochs=1)
    run.fit(module, datamodule=dm)
    metrics = {k: float(v) for k, v in run.callback_metrics.items() if k.startswith("val/")}
    run.test(module, datamodule=dm, verbose=False)
    metrics.update({k: float(v) for k, v in run.callback_metrics.items() if k.startswith("test/")})
    return module, metrics


def test_a_protocol_given_to_the_constructor_evaluates_like_the_one_read_in_setup(tmp_path):
    given, given_metrics = fit_and_test(tmp_path, given=True)
    read, read_metrics = fit_and_test(tmp_path, given=False)
    assert read.protocol == given.protocol == synthetic_protocol("path")
    assert "val/specific_novel/map@10" in read_metrics and "test/specific_unseen/map@10" in read_metrics
    assert given_metrics == read_metrics  # every number, to the last digit
    for module in (given, read):
        assert module.net.attribute_names == ATTRIBUTES
        assert module.net.trained_categories == sorted(TREE.paths[i] for i in TRAIN_IDS)
        assert module.queries.seen_ids.tolist() == TRAIN_IDS
        assert module.queries.texts == [" > ".join(p) for p in TREE.paths]  # the network's text style


def test_the_protocol_follows_a_replaced_network_and_must_match_its_text_style():
    module = ClipItaModule(tiny_net(), protocol=synthetic_protocol("leaf"))
    replacement = tiny_net(modalities=["image"])
    assert replacement.trained_categories == []
    module.use_network(replacement)
    assert replacement.trained_categories == sorted(TREE.paths[i] for i in TRAIN_IDS)
    assert replacement.attribute_names == ATTRIBUTES
    with pytest.raises(
        ValueError, match="protocol's queries are 'path' texts but model.net.category_text is 'leaf'"
    ):
        module.set_protocol(synthetic_protocol("path"))


def test_the_protocol_is_no_hyperparameter():
    module = ClipItaModule(tiny_net(), protocol=synthetic_protocol())
    assert "protocol" not in module.hparams and "net" not in module.hparams


def test_a_given_protocol_of_another_split_is_refused_naming_the_difference(tmp_path):
    net = tiny_net(**ROUTED)
    other = synthetic_protocol("path")
    other = type(other)(other.tree, "path", other.seen_ids, (), other.unseen_ids[:-1], other.attribute_names)
    module = ClipItaModule(net, InfoNCELoss(temperature=0.1), scheduler="none", protocol=other)
    with pytest.raises(ValueError, match="not its DataModule's: unseen_ids"):
        trainer(tmp_path, max_epochs=1).fit(module, datamodule=SyntheticDataModule(net))
