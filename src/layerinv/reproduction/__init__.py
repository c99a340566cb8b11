"""The reproduction system: the paper's experiments as trial grids, stored and reported.

It stands on the core (`layerinv` and its applications) and is never imported by it:
`registry` names the experiments, `run` plans and executes their trials over `parallel`
(local processes or a Dask cluster), `store` keeps one SQLite row per finished trial,
`report` writes REPORT.md and report.html, `experiments/` holds one module per experiment,
and `train` retrains the shipped MNIST models.
"""
