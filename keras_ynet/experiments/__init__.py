"""The paper's experiments: Table II (baselines against Y-Net), Table III (ablations) and
the cross-validation that chose the default, as ``python -m keras_ynet.experiments``.

One module per job:

* :mod:`.cli`: the command's flags (those of :class:`keras_ynet.run_config.RunConfig`
  plus the experiment's own) and their checks; ``__main__`` runs it;
* :mod:`.rows`: what each table holds (its rows as settings or baseline methods) and the
  cross-validation candidates;
* :mod:`.tables`: one table end to end (plan, train what is not stored, write);
* :mod:`.cv`: the K label-stratified folds of the train split, the candidates' scores
  and the choice;
* :mod:`.runs`: one stored run per (method, seed, settings), trained at most once;
* :mod:`.summary_tables`: mean ± std over seeds as markdown, CSV and JSON;
"""
