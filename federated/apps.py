"""The Flower apps of a federation: one ClientApp every site runs, one ServerApp.

`flwr run` (deployment: a SuperLink and one SuperNode per site, docs/federated.md) and
`local_grid.run_local` (the simulation the CLI and the tests run) load these same objects:
`lmdock.federated.apps:client` and `lmdock.federated.apps:server`. The run config's `job`
says what the ServerApp does (`build`).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from lmdock.common.errors import InvalidArgument
from lmdock.federated.build import run_build
from lmdock.federated.build_site import train_round
from lmdock.federated.spec_site import release_spec

__all__ = ["client", "server"]

client = ClientApp()
client.train()(train_round)
client.query("spec")(release_spec)

server = ServerApp()

JOBS = {"build": run_build}


@server.main()
def main(grid: Grid, context: Context) -> None:
    job = JOBS.get(str(context.run_config.get("job", "")))
    if job is None:
        raise InvalidArgument(f"the run config's job must be one of {sorted(JOBS)}")
    job(grid, context.run_config)
