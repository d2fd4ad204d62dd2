"""`python -m serve parity`: greedy token-id parity between two configurations (compare.py is the pure
core, client.py the HTTP edge, cli.py the command)."""
