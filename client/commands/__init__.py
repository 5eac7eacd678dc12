"""`lmdock` subcommands, one module per area; each exposes `register(subparsers)`.

Modules import their heavy dependencies (torch, transformers, the lab) inside the handlers, so
`lmdock --help` stays fast.
"""
