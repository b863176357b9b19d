"""The command line: `rr` (cli/main.py and its commands), `rr-service` (cli/service_main.py), `rr up`, `rr doctor`, `rr whatif`, `rr auth gen`."""
