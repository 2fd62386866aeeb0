"""``clipita leaderboard``: every model and baseline of a leaderboard config, on several held-out splits, scored in
one harness, with significance tests, per-category numbers, plots and the paper's error analysis.

A leaderboard config (``experiments/leaderboards/<name>.yaml``)::

    name: fashion
    base_config: experiments/clip_ita.yaml      # data + frozen text encoder the baselines are scored with
    split_seeds: [3, 4, 5]                      # held-out splits reported on (seen/unseen leaves change with the seed)
    design_seeds: [0, 1, 2]                     # the seeds decisions were measured on; the report names both and warns
                                                # in bold when a reported seed is a design seed (not held out)
    vary_training_seed: true                    # also --seed_everything <split seed> for trained rows
    shared_overrides: [--trainer.enable_progress_bar, "false"]   # every row, every seed
    reference: CLIP-ITA                         # significance marks are against this row
    significance: {test: permutation, correction: holm, alpha: 0.05, n_resamples: 10000}
    paper_ordering:                             # the claim checked from the numbers
      rows: [CLIP-ITA, CLIP-IA, CLIP-I, [image zero-shot, title zero-shot]]   # a list = first one that ran
      metrics: [map@10, mrr, r_precision]
    rows:
      - {name: random, baseline: random}
      - {name: BM25, baseline: bm25, options: {k1: 1.5}}
      - {name: CLIP-ITA, fit: experiments/clip_ita.yaml, overrides: [--model.lr, "0.001"]}
      - {name: mine, fit: experiments/clip_ita.yaml, checkpoint: "runs/mine/seed{seed}/best.ckpt"}
      # stage 2 from the CLIP-ITA row's choice run on the same split seed (the checkpoint it tested: its best under
      # <runs_dir>/clip-ita/seed<s>/checkpoints/, never its _refit); the row it names must come earlier
      - {name: tuned, fit: experiments/clip_ita_finetune.yaml, init_from: CLIP-ITA}
    public_block: {rows: [CLIP-ITA, tuned]}     # the public protocol (.public): plain labels, P@1/P@10/MRR@10

Per split seed, trained rows go through :func:`clipita.experiment.fit_and_test` (exactly ``clipita fit``),
checkpoint rows through ``Trainer.test``, and baselines through :mod:`clipita.baselines` (the module's own
``CategoryRetrievalMetrics`` via ``update_scores``, same queries, groups and test gallery; checked row by row).

Outputs under ``results/<name>/``: ``leaderboard.md`` (tables per setting, mean ± std over seeds, significance
marks, error analysis, the paper-ordering verdict, command and run time), ``leaderboard.json``,
``leaderboard.csv``, ``per_category.csv``, ``leaderboard_*.png``, and ``leaderboard_run.json`` + ``.npz`` (the raw per-query
results: ``--report_only true`` re-renders the report from it without training). A partial report is written
after every split seed but the last.

The public-protocol block (``public.json`` and a section of ``leaderboard.md``, :mod:`.public`) is computed at the
end of a run, or afterwards from the kept checkpoints with ``--public_only true`` (same ``--output_dir`` and
``--runs_dir``; nothing trains).

On a CPU shared with other jobs pass ``--num_threads 1``: the heads train several times faster than with torch's
default thread pool fighting for the same cores.
"""

from __future__ import annotations

from .command import leaderboard
from .report import markdown_table, write_report
from .run import RUN_FILE, LeaderboardRun, RowSeedResult, SeedContext, load_run, save_run
from .spec import BETTER, CEILINGS, TESTED_METRICS, WORSE, LeaderboardSpec, RowSpec, load_spec
from .statistics import ordering_verdict, significance, summarize

__all__ = [
    "BETTER",
    "CEILINGS",
    "RUN_FILE",
    "TESTED_METRICS",
    "WORSE",
    "LeaderboardRun",
    "LeaderboardSpec",
    "RowSeedResult",
    "RowSpec",
    "SeedContext",
    "leaderboard",
    "load_run",
    "load_spec",
    "markdown_table",
    "ordering_verdict",
    "save_run",
    "significance",
    "summarize",
    "write_report",
]
