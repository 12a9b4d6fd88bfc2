"""Search: distill sweeps as Optuna studies (edgekd.search.study)."""
