"""Studies of one model over the core: kan-fast's acceptance targets and its contraction crossover."""
