"""The floor under both libraries: the vocabulary ``lightning_modules``, ``datamodules`` and the apps share.

Each concept is written once here and imported from its module: category paths and their text
(:mod:`clipita_core.paths`), the category tree (:mod:`clipita_core.tree`), the modality and split names and the
attribute text (:mod:`clipita_core.vocabulary`), the lexical tokenizer (:mod:`clipita_core.tokens`) and named
registries (:mod:`clipita_core.registry`). This package imports neither library nor any app
(``tests/test_layering.py``), and needs nothing heavier than numpy.
"""
