"""Training: a config (every key declared once), the run's set-up (`fit`: run directory, resume,
data, model, the teacher's fitted start, objective, trainer) and its loop, with evaluation,
checkpoints, signals and ranks. The CLI and the study runner reach it through `fit.fit` and
`config`; nothing in models/, weights/ or data/ imports it."""
