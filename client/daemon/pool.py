"""The model pool: base models in memory, each shared by the adapters that fit it.

A learnware names its base model as its publisher did (a hub id such as
"Qwen/Qwen2.5-0.5B-Instruct", or a path); `base_models` maps such names to local checkpoint
folders, so a hospital runs the base it has on disk without any hub.

Learnwares with the same base model and task kind (and, for classifiers, label count) share
one `SharedBase`; each base has its own `Batcher`. At most `max_loaded_bases` bases stay in
memory; loading another unloads the least recently used one.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from lmdock.client.daemon.batching import Batcher
from lmdock.client.daemon.config import RuntimeSettings
from lmdock.client.daemon.types import LoadedBase
from lmdock.client.runtime import SharedBase
from lmdock.common.package import Manifest

__all__ = ["ModelPool"]

log = logging.getLogger(__name__)
BaseKey = tuple[str, str, int]


class ModelPool:
    def __init__(self, runtime: RuntimeSettings, *, base_models: Mapping[str, str] | None = None) -> None:
        self.runtime = runtime
        self.base_models = dict(base_models or {})  # model name -> local checkpoint folder
        self._bases: OrderedDict[BaseKey, Batcher] = OrderedDict()  # least recently used first
        self._where: dict[str, BaseKey] = {}  # learnware id -> its base
        self._lock = threading.Lock()  # guards the two maps (held briefly)
        self._loading = threading.Lock()  # one model load at a time (loads are slow)

    def is_loaded(self, learnware_id: str) -> bool:
        with self._lock:
            return learnware_id in self._where

    def load(self, learnware_id: str, folder: Path, manifest: Manifest) -> None:
        """Attach a verified learnware, loading its base model first if needed."""
        with self._loading:
            if self.is_loaded(learnware_id):
                return
            key = SharedBase.key_for(manifest.base_model, manifest.task)
            with self._lock:
                batcher = self._bases.get(key)
            if batcher is None:
                log.info("loading base model %s for %s learnwares", manifest.base_model, manifest.task.kind)
                host = SharedBase(
                    self.base_models.get(manifest.base_model, manifest.base_model),
                    kind=key[1],
                    num_labels=key[2],
                    device=self.runtime.device,
                    dtype=self.runtime.dtype,
                    max_input_tokens=self.runtime.max_input_tokens,
                )
                batcher = Batcher(
                    host, max_batch=self.runtime.max_batch_size, wait_s=self.runtime.batch_wait_ms / 1000
                )
            try:
                batcher.host.add(learnware_id, folder, manifest.task)
            except BaseException:
                if key not in self._bases:
                    batcher.close()
                raise
            with self._lock:
                self._bases[key] = batcher
                self._bases.move_to_end(key)
                self._where[learnware_id] = key
                unloaded = self._trim()
            for old in unloaded:
                old.close()
            log.info("learnware %s loaded (%d base model(s) in memory)", learnware_id, len(self._bases))

    def _trim(self) -> list[Batcher]:
        out = []
        while len(self._bases) > self.runtime.max_loaded_bases:
            key, batcher = self._bases.popitem(last=False)
            for learnware_id in [i for i, k in self._where.items() if k == key]:
                del self._where[learnware_id]
            log.info("unloading base model %s (least recently used)", key[0])
            out.append(batcher)
        return out

    def unload(self, learnware_id: str) -> None:
        """Detach a learnware; its base is dropped when no other learnware uses it."""
        with self._lock:
            key = self._where.pop(learnware_id, None)
            if key is None:
                return
            batcher = self._bases[key]
            if key in self._where.values():
                batcher.host.remove(learnware_id)
                return
            del self._bases[key]
        batcher.close()

    def batcher(self, learnware_id: str) -> Batcher:
        """The batcher of a loaded learnware's base (KeyError when not loaded).

        A batcher stays usable after its base is unloaded: it finishes the jobs it has queued.
        """
        with self._lock:
            key = self._where[learnware_id]
            self._bases.move_to_end(key)
            return self._bases[key]

    def describe(self) -> list[LoadedBase]:
        with self._lock:
            return [
                LoadedBase(
                    base_model=key[0],
                    kind=key[1],
                    device=str(batcher.host.device),
                    dtype=str(batcher.host.dtype).removeprefix("torch."),
                    learnwares=tuple(sorted(i for i, k in self._where.items() if k == key)),
                    batches_run=batcher.batches_run,
                )
                for key, batcher in self._bases.items()
            ]

    def close(self) -> None:
        with self._lock:
            batchers = list(self._bases.values())
            self._bases.clear()
            self._where.clear()
        for batcher in batchers:
            batcher.close()
