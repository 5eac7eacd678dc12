"""One site of a federation as its SuperNode knows it: its data, its data set, its own ledger.

A site is configured on its own machine, never by the server: the SuperNode's `node_config`

    site            the site's name (what the federation's manifest lists)
    data            its task file (JSONL, CSV/TSV or text: `lmdock.client.task`)
    ledger          its privacy ledger (default: the home's, `default_ledger_path()`)
    dataset         the data set its releases are booked to (default: the file's name)
    budget-epsilon  the cap a new data set is registered with (default 3; delta 1e-6)

Every release a site makes (a DP-SGD run, a spec, noised counts) is booked in its own ledger
before anything leaves, against the cap stored there, whatever the server asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lmdock.client.ledger import DEFAULT_BUDGET, DataSet, Ledger, default_ledger_path
from lmdock.client.privacy_unit import check_name, default_name
from lmdock.client.task import TaskData, read_task_file
from lmdock.common.accounting import Budget
from lmdock.common.errors import InvalidArgument

__all__ = ["Site"]


@dataclass(frozen=True)
class Site:
    name: str
    data: Path
    ledger_path: Path
    dataset: str
    budget: Budget

    @classmethod
    def from_node_config(cls, config: Mapping[str, object]) -> Site:
        try:
            name, data = str(config["site"]), Path(str(config["data"]))
        except KeyError as exc:
            raise InvalidArgument(f"the site's node config lacks {exc}") from None
        ledger = config.get("ledger")
        epsilon = float(str(config.get("budget-epsilon", DEFAULT_BUDGET.epsilon)))
        return cls(
            name=check_name(name),
            data=data,
            ledger_path=Path(str(ledger)) if ledger else default_ledger_path(),
            dataset=check_name(str(config["dataset"])) if config.get("dataset") else default_name(data),
            budget=Budget(epsilon=epsilon, delta=DEFAULT_BUDGET.delta),
        )

    def node_config(self) -> dict[str, str | float]:
        return {
            "site": self.name,
            "data": str(self.data),
            "ledger": str(self.ledger_path),
            "dataset": self.dataset,
            "budget-epsilon": self.budget.epsilon,
        }

    def read(self) -> TaskData:
        return read_task_file(self.data)

    def ledger(self, data: TaskData) -> tuple[Ledger, DataSet]:
        """The site's ledger, and its data set as the ledger books it."""
        dataset = DataSet.of(data.texts, name=self.dataset)
        return Ledger(self.ledger_path, budget=self.budget, declared=dataset), dataset
