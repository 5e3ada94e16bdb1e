"""Store contracts written once; tests/unit runs them on memory, tests/integration on SQL."""
