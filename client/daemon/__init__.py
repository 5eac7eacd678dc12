"""The on-prem client daemon: tasks, the adapter cache and local models behind local APIs.

Modules: `config` (TOML settings), `registry` (task states), `preparation` (spec, search,
pull), `pool` and `batching` (shared base models), `types` and `core` (the operations), `http_api` and
`openai_schema` (OpenAI-compatible HTTP), `local_grpc` and `local_serde` (local gRPC),
`local_client` (for the command line), `app` (start/stop), `auth`, `runfile`, `market_link`.
"""
