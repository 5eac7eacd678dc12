"""The Flower apps of a federation: one ClientApp every site runs, one ServerApp.

`flwr run` (deployment: a SuperLink and one SuperNode per site, docs/federated.md) and
`local_grid.run_local` (the simulation the CLI and the tests run) load these same objects:
`lmdock.federated.apps:client` and `lmdock.federated.apps:server`. The run config's `job`
says what the ServerApp does (`build`, `search`, `evaluate`); a search's sites run `search_client`.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from lmdock.common.errors import InvalidArgument
from lmdock.federated.build import run_build
from lmdock.federated.build_site import train_round
from lmdock.federated.evaluate import run_evaluate
from lmdock.federated.evaluate_site import evaluate_candidates
from lmdock.federated.search import run_search
from lmdock.federated.search_site import contribute
from lmdock.federated.spec_site import release_spec

__all__ = ["client", "search_client", "server"]

#: Every site's ClientApp for building and evaluating, on the Message API.
client = ClientApp()
client.train()(train_round)
client.query("spec")(release_spec)
client.evaluate()(evaluate_candidates)

#: Every site's ClientApp for searching: Flower's SecAgg+ client around its noisy kernel sum.
search_client = ClientApp()
search_client.train(mods=[secaggplus_mod])(contribute)

server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    job = str(context.run_config.get("job", ""))
    if job == "build":
        run_build(grid, context.run_config)
    elif job == "search":
        run_search(grid, context)
    elif job == "evaluate":
        run_evaluate(grid, context)
    else:
        raise InvalidArgument("the run config's job must be build, search or evaluate")
