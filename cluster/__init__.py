"""Who is in the cluster and who leads it: the lease and its terms (leadership/), hosts joining and leaving (membership/)."""
