"""A real fleet on one machine: hosts as network namespaces on a bridge (`python -m ops.fleet`, as root)."""
