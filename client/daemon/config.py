"""The daemon's configuration: a TOML file loaded into validated, frozen dataclasses.

Every table and key is documented in docs/daemon.md. Unknown keys are refused (a typo must not
silently fall back to a default), relative paths are resolved against the config file's
folder, and the whole config round-trips through JSON (`to_dict` / `from_dict`), which is how
`lmdock status --json` shows the configuration in force.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdock.client.addresses import is_loopback
from lmdock.client.cache import default_cache_dir
from lmdock.client.privacy_unit import NAME
from lmdock.client.task import FORMATS, MIN_SEARCH_RECORDS
from lmdock.common.accounting import DELTA_CEILING
from lmdock.common.errors import InvalidArgument

__all__ = [
    "ApiSettings",
    "CacheSettings",
    "DaemonConfig",
    "DaemonSettings",
    "MarketSettings",
    "PrivacySettings",
    "RuntimeSettings",
    "TaskSettings",
    "load_config",
    "parse_address",
    "parse_size",
]

TASK_NAME = NAME  # a task's name is its data set's name (`lmdock.client.privacy_unit`)
DEVICES = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "float16", "bfloat16")
LOG_LEVELS = ("debug", "info", "warning", "error")
# an origin as a browser sends it: scheme://host[:port], lower case, no path
ORIGIN = re.compile(r"^https?://([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:\d{1,5})?$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: int | str, *, where: str) -> int:
    """Bytes from an int or a string such as "20GiB", "500 MB", "4096"."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{where} must be a size such as 20GiB, not {value!r}")
    if isinstance(value, int):
        number = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise InvalidArgument(f"{where} must be a size such as 20GiB or 500MB, not {value!r}")
        number = int(float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()])
    if number <= 0:
        raise InvalidArgument(f"{where} must be positive")
    return number


def parse_address(address: str, *, where: str) -> tuple[str, int]:
    """(host, port) from "host:port" or "[v6]:port"; port 0 asks the system for a free port."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"{where} must look like 127.0.0.1:8421, not {address!r}")
    return host, int(port)


@dataclass(frozen=True)
class DaemonSettings:
    state_dir: str = ""  # task registry, API token, runtime file; default <cache.dir>/daemon
    log_file: str = ""  # default: standard error
    log_level: str = "info"

    def __post_init__(self) -> None:
        _one_of(self.log_level, LOG_LEVELS, "daemon.log_level")


@dataclass(frozen=True)
class MarketSettings:
    address: str = ""  # host:port of the market; empty: serve cached learnwares only
    timeout_s: float = 30.0
    tls: bool = False  # TLS with the system's root certificates (implied by the tls_* settings)
    tls_ca: str = ""  # PEM bundle of the CA that signed the market's certificate (enables TLS)
    tls_pin_sha256: str = ""  # refuse any market certificate whose sha256 (DER, hex) differs
    tls_server_name: str = ""  # name to check in the certificate, when not the address's host
    client_cert: str = ""  # PEM client certificate for mutual TLS
    client_key: str = ""  # PEM private key of client_cert
    api_key_file: str = ""  # file holding the market API key (owner-only permissions)
    attempts: int = 5  # tries of a download when the market is UNAVAILABLE
    backoff_s: float = 0.5  # first wait between tries; doubles each time, at most 30 s

    def __post_init__(self) -> None:
        if self.address:
            parse_address(self.address, where="market.address")
        _positive(self.timeout_s, "market.timeout_s")
        _positive(self.backoff_s, "market.backoff_s")
        if not 1 <= self.attempts <= 20:
            raise InvalidArgument("market.attempts must be between 1 and 20")
        if bool(self.client_cert) != bool(self.client_key):
            raise InvalidArgument("market.client_cert and market.client_key go together: set both or neither")
        if self.tls_server_name and not self.uses_tls:
            raise InvalidArgument("market.tls_server_name needs TLS: set market.tls = true or market.tls_ca")
        pin = self.tls_pin_sha256.replace(":", "").lower()
        if pin and not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise InvalidArgument("market.tls_pin_sha256 must be a sha256 in hex (64 digits, ':' allowed)")

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca or self.tls_pin_sha256 or self.client_cert)


@dataclass(frozen=True)
class CacheSettings:
    dir: str = ""  # default $LMDOCK_HOME, else ~/.cache/lmdock
    max_bytes: int = 20 * 2**30  # least recently used learnwares are evicted above this

    def __post_init__(self) -> None:
        _positive(self.max_bytes, "cache.max_bytes")


@dataclass(frozen=True)
class PrivacySettings:
    epsilon: float = 1.0  # spent by one task's search
    delta: float = 1e-6
    budget_epsilon: float = 3.0  # cap of a data set registered by the daemon, over all its releases
    budget_delta: float = 1e-6  # at most 1e-6 (common.accounting.max_delta)
    ledger_anchor: str = ""  # where the ledger's head is anchored; default <ledger>.head
    min_records: int = MIN_SEARCH_RECORDS

    def __post_init__(self) -> None:
        _positive(self.epsilon, "privacy.epsilon")
        _positive(self.budget_epsilon, "privacy.budget_epsilon")
        if not 0 < self.delta < 1 or not 0 < self.budget_delta < 1:
            raise InvalidArgument("privacy.delta and privacy.budget_delta must be in (0, 1)")
        if self.budget_delta > DELTA_CEILING:
            raise InvalidArgument(
                f"privacy.budget_delta={self.budget_delta:g} is above the limit delta <= min(1e-6, 1/(10 n))"
            )
        if self.epsilon > self.budget_epsilon or self.delta > self.budget_delta:
            raise InvalidArgument("one search (privacy.epsilon, delta) must fit in the budget per dataset")
        if self.min_records < 1:
            raise InvalidArgument("privacy.min_records must be at least 1")


@dataclass(frozen=True)
class RuntimeSettings:
    device: str = "auto"  # auto = cuda, then mps, then cpu
    dtype: str = "auto"  # auto = bfloat16 on GPUs that support it, float32 on cpu
    max_batch_size: int = 16  # texts run through the model together
    batch_wait_ms: float = 5.0  # how long a request waits for others to share its batch
    max_new_tokens: int = 512  # upper bound on a request's max_tokens
    max_input_tokens: int = 2048  # prompts are truncated to this many tokens
    max_loaded_bases: int = 2  # base models kept in memory (least recently used unloaded)

    def __post_init__(self) -> None:
        if not DEVICES.match(self.device):
            raise InvalidArgument(f"runtime.device must be auto, cpu, mps or cuda[:N], not {self.device!r}")
        _one_of(self.dtype, DTYPES, "runtime.dtype")
        for name in ("max_batch_size", "max_new_tokens", "max_input_tokens", "max_loaded_bases"):
            _positive(getattr(self, name), f"runtime.{name}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise InvalidArgument("runtime.batch_wait_ms must be between 0 and 1000")


@dataclass(frozen=True)
class ApiSettings:
    http: str = "127.0.0.1:8421"  # OpenAI-compatible HTTP API; empty string: off
    grpc: str = "127.0.0.1:8422"  # local gRPC API (also used by `lmdock status` and `lmdock task`)
    token_file: str = ""  # bearer token; default <daemon.state_dir>/api-token, generated (mode 600)
    allow_remote: bool = False  # must be true to listen on anything but loopback
    max_request_bytes: int = 1 * 2**20
    max_prompts: int = 64  # prompts in one request
    max_concurrent: int = 32  # requests in flight; more get HTTP 429 / RESOURCE_EXHAUSTED
    cors_origins: tuple[str, ...] = ()  # web origins whose pages may call the HTTP API; none by default

    def __post_init__(self) -> None:
        if not self.grpc:
            raise InvalidArgument("api.grpc is required: the command line talks to the daemon through it")
        for key in ("http", "grpc"):
            address = getattr(self, key)
            if not address:
                continue
            host, _ = parse_address(address, where=f"api.{key}")
            if not self.allow_remote and not is_loopback(host):
                raise InvalidArgument(
                    f"api.{key} = {address!r} can be reached from other machines; listen on 127.0.0.1, "
                    "or set api.allow_remote = true if you mean it (and put TLS in front)"
                )
        for name in ("max_request_bytes", "max_prompts", "max_concurrent"):
            _positive(getattr(self, name), f"api.{name}")
        for origin in self.cors_origins:
            if not ORIGIN.match(origin):
                raise InvalidArgument(
                    f"api.cors_origins: {origin!r} is not an origin; write each as the browser sends it, "
                    "scheme://host[:port] in lower case without a path (no '*': name every origin)"
                )


@dataclass(frozen=True)
class TaskSettings:
    """A task the daemon serves: its private data, how to read it, and how to search."""

    name: str  # the `model` name apps use in the OpenAI-compatible API
    data: str = ""  # task file: JSONL, CSV/TSV or plain text (one record per line)
    format: str = "auto"  # auto (by suffix), jsonl, csv, tsv or text
    text_column: str = "text"  # CSV/JSONL field holding the text
    label_column: str = ""  # optional gold labels (classification)
    answer_column: str = ""  # optional gold answers (generation)
    person_column: str = ""  # optional: whose record it is; makes the person the privacy unit
    epsilon: float = 0.0  # 0: privacy.epsilon
    delta: float = 0.0  # 0: privacy.delta
    top_k: int = 5
    learnware: str = ""  # pin a learnware id: no search, no privacy spent

    def __post_init__(self) -> None:
        if not TASK_NAME.fullmatch(self.name):
            raise InvalidArgument(
                f"task name {self.name!r} must be 1-64 characters of a-z, 0-9, '.', '_', '-' "
                "(it is the model name apps ask for)"
            )
        if not self.data and not self.learnware:
            raise InvalidArgument(f"task {self.name!r} needs a data file (or a pinned learnware)")
        _one_of(self.format, ("auto", *FORMATS), f"task {self.name!r} format")
        if self.epsilon < 0 or not 0 <= self.delta < 1:
            raise InvalidArgument(f"task {self.name!r}: epsilon must be >= 0 and delta in [0, 1)")
        if not 1 <= self.top_k <= 100:
            raise InvalidArgument(f"task {self.name!r}: top_k must be between 1 and 100")


@dataclass(frozen=True)
class DaemonConfig:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    market: MarketSettings = field(default_factory=MarketSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    tasks: tuple[TaskSettings, ...] = ()
    #: base model name (as learnware manifests give it) -> local checkpoint folder
    base_models: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidArgument(f"tasks are named twice: {', '.join(duplicates)}")

    # Defaults that depend on other settings.
    @property
    def cache_dir(self) -> Path:
        return Path(self.cache.dir) if self.cache.dir else default_cache_dir()

    @property
    def state_dir(self) -> Path:
        return Path(self.daemon.state_dir) if self.daemon.state_dir else self.cache_dir / "daemon"

    @property
    def token_file(self) -> Path:
        return Path(self.api.token_file) if self.api.token_file else self.state_dir / "api-token"

    @property
    def ledger_path(self) -> Path:
        """One ledger per home: the cache folder's, the file `lmdock search` uses by default."""
        return self.cache_dir / "ledger.jsonl"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"tasks": [dataclasses.asdict(t) for t in self.tasks]}

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: Path | None = None) -> DaemonConfig:
        """Build and validate; relative paths are taken relative to `base_dir` when given."""
        if not isinstance(data, dict):
            raise InvalidArgument("the configuration must be a table of tables")
        data = dict(data)
        tasks = data.pop("tasks", [])
        if not isinstance(tasks, list):
            raise InvalidArgument("tasks must be an array of tables: write each as [[tasks]]")
        base_models = data.pop("base_models", {})
        if not isinstance(base_models, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in base_models.items()
        ):
            raise InvalidArgument('[base_models] maps model names to folders: "org/model" = "/models/folder"')
        base_models = {k: _resolve(v, base_dir) for k, v in base_models.items()}
        sections: dict[str, Any] = {}
        for name, section_type in _SECTIONS.items():
            sections[name] = _build(section_type, data.pop(name, {}), name, base_dir)
        if data:
            known = sorted([*_SECTIONS, "tasks", "base_models"])
            raise InvalidArgument(f"unknown table(s) {sorted(data)}; known: {known}")
        built = tuple(_build(TaskSettings, t, f"tasks[{i}]", base_dir) for i, t in enumerate(tasks))
        return cls(tasks=built, base_models=base_models, **sections)


_SECTIONS: dict[str, type] = {
    "daemon": DaemonSettings,
    "market": MarketSettings,
    "cache": CacheSettings,
    "privacy": PrivacySettings,
    "runtime": RuntimeSettings,
    "api": ApiSettings,
}
#: Keys holding file system paths, resolved against the config file's folder.
_PATH_KEYS = {"state_dir", "log_file", "tls_ca", "client_cert", "client_key", "api_key_file", "dir"}
_PATH_KEYS |= {"ledger_anchor", "token_file", "data"}
_SIZE_KEYS = {"max_bytes", "max_request_bytes"}


def load_config(path: Path) -> DaemonConfig:
    """Read and validate a TOML config file; errors name the file and the offending key."""
    if not path.is_file():
        raise InvalidArgument(
            f"config file {path} does not exist; docs/daemon.md has a complete example to start from"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path} is not valid TOML: {exc}") from None
    try:
        return DaemonConfig.from_dict(data, base_dir=path.resolve().parent)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path}: {exc}") from None


def _build(cls: type, table: Any, where: str, base_dir: Path | None) -> Any:
    if not isinstance(table, dict):
        raise InvalidArgument(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if where == "privacy" and "ledger" in unknown:
        raise InvalidArgument(
            "privacy.ledger is no longer a setting: there is one ledger per home, <cache.dir>/ledger.jsonl "
            "(the one `lmdock search` uses), so that no second file gives a data set a fresh budget"
        )
    if unknown:
        raise InvalidArgument(f"unknown key(s) {unknown} in [{where}]; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        where_key = f"{where}.{key}"
        if key in _SIZE_KEYS:
            values[key] = parse_size(value, where=where_key)
            continue
        values[key] = _coerce(value, hints[key], where_key)
        if key in _PATH_KEYS and values[key]:
            values[key] = _resolve(values[key], base_dir)
    try:
        return cls(**values)
    except TypeError as exc:  # a required key is missing
        raise InvalidArgument(f"[{where}] is incomplete: {exc}") from None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidArgument(f"{where} must be true or false, not {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"{where} must be an integer, not {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(f"{where} must be a number, not {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise InvalidArgument(f"{where} must be a string, not {value!r}")
        return value
    if kind == tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"{where} must be a list of strings, not {value!r}")
        return tuple(value)
    raise AssertionError(f"config field {where} has an unsupported type {kind!r}")


def _resolve(value: str, base_dir: Path | None) -> str:
    path = Path(value).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return str(path)


def _positive(value: float, where: str) -> None:
    if not value > 0:
        raise InvalidArgument(f"{where} must be positive")


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise InvalidArgument(f"{where} must be one of {', '.join(allowed)}, not {value!r}")
