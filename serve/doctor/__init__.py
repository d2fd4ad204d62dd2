"""``python -m serve doctor``: GPU, engine, model directory and memory fit, checked before loading."""
