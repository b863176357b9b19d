"""Data sync: the leader plans copies of selfplay batches to training nodes; each node carries its part out."""
