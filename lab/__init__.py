"""Reference market, evaluation harness and the `lmdock demo` (composes server and client)."""
