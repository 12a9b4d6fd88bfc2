"""Search: distill sweeps as Optuna studies (edgekd.search.study) and the scout of candidate students
(edgekd.search.scout, its candidates in edgekd.search.candidates)."""
