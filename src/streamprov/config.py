"""The configuration catalog: node types and named configurations, from TOML and the API.

A **node type** says what one node is: ``cpus``, ``memory_bytes`` and ``cost_per_hour``. A
**configuration** says how to deploy a pipeline: ``nodes`` (one count for every stage, or a
count per stage name), the ``node_type`` and the ``batch_size``.

Where the catalog comes from, later sources overriding earlier ones by name:

1. built-in defaults (``small``, ``medium``, ``large``, ``wide``);
2. the TOML file: ``--config-file PATH``, else ``streamprov.toml`` in the working directory
   (if present);
3. edits made over the API (``PUT /configurations/{id}``), kept in ``configurations.json`` in
   the data dir, so the user's TOML file (and its comments) is never rewritten.

TOML layout (field names snake_case; the API takes them in camelCase as well)::

    [node_types.small]
    cpus = 1
    memory_bytes = 1073741824
    cost_per_hour = 0.05

    [configurations.fast]
    nodes = 2                      # or a table: nodes = { parse = 4, enrich = 2 }
    node_type = "small"
    batch_size = 512

    [serve]
    pipelines = { demo = "streamprov.examples.demo:pipeline" }   # stream id -> import path
    api_token_file = "api-token"   # needed to listen beyond loopback; see docs/reliability.md
    protect_reads = false          # reads need the token too
    max_record_bytes = 1048576     # also: max_body_bytes, max_records_per_request,
    max_replay_window_s = 604800   #       limits answered with 413/400 naming the field

    [lineage]                      # OpenLineage events of replays and tuning jobs
    url = "http://marquez:5000/api/v1/lineage"                  # and/or
    file = "lineage.ndjson"

Every error names the offending field (``configurations.fast.batch_size``, say).
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel, to_snake

from streamprov.errors import InvalidInput, NotFound
from streamprov.model import validate_id

CONFIG_FILE_NAME = "streamprov.toml"
OVERRIDES_FILE_NAME = "configurations.json"
_GIB = 1 << 30


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel,
                              populate_by_name=True)


class NodeType(_Model):
    """What one node is: CPUs, memory (bytes) and what it costs per hour (any currency)."""

    cpus: int = Field(ge=1, le=1024, description="CPU cores of one node.")
    memory_bytes: int = Field(gt=0, le=1 << 50, description="Memory of one node, in bytes.")
    cost_per_hour: float = Field(ge=0, le=1e6, allow_inf_nan=False,
                                 description="Price of one node for one hour.")


class Configuration(_Model):
    """How to deploy a pipeline: node count(s), node type and batch size."""

    nodes: int | dict[str, int] = Field(
        description="Nodes (processes) per stage: one count for every stage, or a map from "
        "stage name to count (stages not named keep the pipeline's own parallelism).")
    node_type: str = Field(description="Name of a node type of the catalog.")
    batch_size: int = Field(default=1024, ge=1, le=1_000_000,
                            description="Records per batch between nodes.")
    description: str = Field(default="", max_length=500)

    @field_validator("nodes")
    @classmethod
    def _nodes_positive(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        counts = value.values() if isinstance(value, dict) else [value]
        if isinstance(value, dict) and not value:
            raise ValueError("give at least one stage, or one count for all")
        for n in counts:
            if n < 1 or n > 1024:
                raise ValueError("node counts must be 1..1024")
        return value

    def stage_counts(self, stages: list[str], max_parallelism: int,
                     parallel_safe: dict[str, bool] | None = None) -> dict[str, int]:
        """Node count per stage of a pipeline with these ``stages``.

        One count for all is applied to every stage except a sink that cannot run in
        parallel (it stays at 1). Raises ``InvalidInput`` (field ``nodes``/``nodes.<stage>``)
        for an unknown stage or a count above the pipeline's ``max_parallelism``.
        """
        safe = parallel_safe or {}
        if isinstance(self.nodes, int):
            if self.nodes > max_parallelism:
                raise InvalidInput(
                    f"nodes: {self.nodes} per stage is more than the pipeline's "
                    f"max_parallelism ({max_parallelism}); the local runner cannot scale a "
                    "stage beyond it", field="nodes")
            return {s: (self.nodes if safe.get(s, True) else 1) for s in stages}
        counts: dict[str, int] = {}
        for stage, n in self.nodes.items():
            if stage not in stages:
                raise InvalidInput(f"nodes: the pipeline has no stage {stage!r} "
                                   f"(stages: {', '.join(stages)})", field=f"nodes.{stage}")
            if n > max_parallelism:
                raise InvalidInput(f"nodes.{stage}: {n} is more than the pipeline's "
                                   f"max_parallelism ({max_parallelism})",
                                   field=f"nodes.{stage}")
            if n > 1 and not safe.get(stage, True):
                raise InvalidInput(f"nodes.{stage}: this sink cannot run in parallel",
                                   field=f"nodes.{stage}")
            counts[stage] = n
        return counts


MIB = 1 << 20
WEEK_S = 7 * 24 * 3600


class ServeSection(_Model):
    """``streamprov serve``: pipelines it feeds, who may call it, how much one request may
    carry."""

    pipelines: dict[str, str] = Field(
        default_factory=dict,
        description="Pipelines `streamprov serve` accepts records for: stream id -> import "
        "path (package.module:name).")
    api_token_file: str | None = Field(
        default=None, description="File holding the API token (relative to this file). "
        "Required to listen on a non-loopback address; with it, every mutating request "
        "needs `Authorization: Bearer <token>`.")
    protect_reads: bool = Field(
        default=False, description="Read endpoints need the token too (/healthz stays open).")
    max_body_bytes: int = Field(
        default=16 * MIB, ge=1024, le=1 << 31, description="Largest request body, bytes.")
    max_record_bytes: int = Field(
        default=MIB, ge=1, le=1 << 31, description="Largest ingested record (its JSON), bytes.")
    max_records_per_request: int = Field(
        default=100_000, ge=1, le=100_000_000, description="Most records one ingest request "
        "may carry.")
    max_replay_window_s: float = Field(
        default=WEEK_S, gt=0, le=100 * 365 * 24 * 3600, allow_inf_nan=False,
        description="Longest window (end - start) a replay or tuning job may ask for, seconds.")


class StoreSection(_Model):
    url: str | None = Field(default=None, description="Store URL for both stores (postgresql://...).")
    provenance_url: str | None = Field(default=None, description="Provenance store URL.")
    stream_log_url: str | None = Field(default=None, description="Stream log URL.")


class RuntimeSection(_Model):
    runner: Literal["local", "ray"] | None = Field(
        default=None, description="Where nodes run: local OS processes or a Ray cluster.")
    ray_address: str | None = Field(default=None, description="Ray cluster to join.")


class LineageSection(_Model):
    url: str | None = Field(
        default=None, description="OpenLineage HTTP endpoint events are POSTed to "
        "(http://host:5000/api/v1/lineage).")
    file: str | None = Field(
        default=None, description="File events are appended to, one JSON object a line.")
    namespace: str = Field(default="streamprov", min_length=1,
                           description="OpenLineage job namespace of replays and tuning jobs.")
    timeout_s: float = Field(default=2.0, gt=0, le=60,
                             description="Seconds an HTTP POST may take before it counts as "
                             "failed.")


class CatalogFile(_Model):
    """The TOML file's schema."""

    node_types: dict[str, NodeType] = Field(default_factory=dict)
    configurations: dict[str, Configuration] = Field(default_factory=dict)
    serve: ServeSection = Field(default_factory=ServeSection)
    store: StoreSection = Field(default_factory=StoreSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    lineage: LineageSection = Field(default_factory=LineageSection)


def file_settings(config_file: Path | None = None, *, cwd: Path | None = None
                  ) -> tuple[StoreSection, RuntimeSection]:
    """The ``[store]`` and ``[runtime]`` sections of the config file (``config_file``, else
    ``./streamprov.toml`` if present); empty sections without one."""
    path = config_file
    if path is None:
        candidate = (cwd or Path.cwd()) / CONFIG_FILE_NAME
        path = candidate if candidate.is_file() else None
    elif not path.is_file():
        raise InvalidInput(f"config file {path}: no such file", field="config-file")
    if path is None:
        return StoreSection(), RuntimeSection()
    parsed = parse_toml(path)
    return parsed.store, parsed.runtime


_ALIASES = frozenset(
    to_camel(name) for model in (NodeType, Configuration, CatalogFile, ServeSection,
                                 StoreSection, RuntimeSection, LineageSection)
    for name in model.model_fields)

DEFAULT_NODE_TYPES: dict[str, NodeType] = {
    "small": NodeType(cpus=1, memory_bytes=1 * _GIB, cost_per_hour=0.05),
    "medium": NodeType(cpus=2, memory_bytes=4 * _GIB, cost_per_hour=0.20),
    "large": NodeType(cpus=4, memory_bytes=16 * _GIB, cost_per_hour=0.80),
}

DEFAULT_CONFIGURATIONS: dict[str, Configuration] = {
    "small": Configuration(nodes=1, node_type="small", batch_size=256,
                           description="one small node per stage"),
    "medium": Configuration(nodes=2, node_type="medium", batch_size=1024,
                            description="two medium nodes per stage"),
    "large": Configuration(nodes=4, node_type="large", batch_size=2048,
                           description="four large nodes per stage"),
    "wide": Configuration(nodes=6, node_type="small", batch_size=512,
                          description="many small nodes: six per stage"),
}


def _field_of(exc: ValidationError, prefix: str = "", snake: bool = False
              ) -> tuple[str, str]:
    """(dotted field, message) of a pydantic error's first problem."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
    if snake:  # TOML spells fields snake_case; pydantic names a missing one by its alias
        loc = [to_snake(p) if p in _ALIASES else p for p in loc]
    # drop the union-branch names pydantic puts in locations ("int", "dict[str,int]")
    loc = [p for p in loc if p not in ("int", "dict[str,int]", "str", "float")]
    dotted = ".".join([p for p in (prefix, *loc) if p])
    return dotted or prefix or "body", str(first.get("msg", "invalid value"))


def validation_error(exc: ValidationError, prefix: str = "", where: str = "",
                     snake: bool = False) -> InvalidInput:
    name, msg = _field_of(exc, prefix, snake)
    return InvalidInput(f"{where}{name}: {msg}", field=name)


class Catalog:
    """Node types and configurations by name; thread-safe; edits persist in the data dir."""

    def __init__(self, node_types: dict[str, NodeType],
                 configurations: dict[str, Configuration], *,
                 serve: ServeSection | None = None, overrides_path: Path | None = None,
                 source: str = "defaults", lineage: LineageSection | None = None) -> None:
        self._node_types = dict(node_types)
        self._configurations = dict(configurations)
        self.serve = serve or ServeSection()
        self.lineage = lineage or LineageSection()
        """The file's ``[lineage]`` section (``streamprov.observe.lineage``)."""
        self.overrides_path = overrides_path
        self.source = source
        self._lock = threading.Lock()
        for cid, cfg in self._configurations.items():
            self._check(cid, cfg, f"configurations.{cid}")

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, config_file: Path | None = None, data_dir: Path | None = None,
             *, cwd: Path | None = None) -> Catalog:
        """Defaults, then the TOML file, then the API's edits in ``data_dir``."""
        node_types = dict(DEFAULT_NODE_TYPES)
        configurations = dict(DEFAULT_CONFIGURATIONS)
        serve = ServeSection()
        lineage = LineageSection()
        source = "defaults"
        path = config_file
        if path is None:
            candidate = (cwd or Path.cwd()) / CONFIG_FILE_NAME
            path = candidate if candidate.is_file() else None
        elif not path.is_file():
            raise InvalidInput(f"config file {path}: no such file", field="config-file")
        if path is not None:
            parsed = parse_toml(path)
            node_types.update(parsed.node_types)
            configurations.update(parsed.configurations)
            serve = parsed.serve
            lineage = parsed.lineage
            source = str(path)
        overrides = data_dir / OVERRIDES_FILE_NAME if data_dir is not None else None
        if overrides is not None and overrides.is_file():
            try:
                doc = CatalogFile.model_validate(orjson.loads(overrides.read_bytes()))
            except (orjson.JSONDecodeError, ValidationError) as exc:
                raise InvalidInput(f"{overrides}: not a valid catalog ({exc})",
                                   field="configurations") from exc
            node_types.update(doc.node_types)
            configurations.update(doc.configurations)
        for cid in configurations:
            validate_id(cid, f"configurations.{cid}")
        return cls(node_types, configurations, serve=serve, overrides_path=overrides,
                   source=source, lineage=lineage)

    # -- reading ----------------------------------------------------------------------------
    def configuration(self, config_id: str, field: str = "configurationId") -> Configuration:
        with self._lock:
            cfg = self._configurations.get(config_id)
        if cfg is None:
            raise NotFound(f"unknown configuration {config_id!r}; known: "
                           f"{', '.join(sorted(self._configurations))}", field=field)
        return cfg

    def node_type(self, name: str, field: str = "nodeType") -> NodeType:
        with self._lock:
            nt = self._node_types.get(name)
        if nt is None:
            raise NotFound(f"unknown node type {name!r}; known: "
                           f"{', '.join(sorted(self._node_types))}", field=field)
        return nt

    def configurations(self) -> dict[str, Configuration]:
        with self._lock:
            return dict(sorted(self._configurations.items()))

    def node_types(self) -> dict[str, NodeType]:
        with self._lock:
            return dict(sorted(self._node_types.items()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.configurations())

    # -- editing ----------------------------------------------------------------------------
    def _check(self, cid: str, cfg: Configuration, prefix: str | None) -> None:
        if cfg.node_type not in self._node_types:
            name = f"{prefix}.node_type" if prefix else "nodeType"
            raise InvalidInput(f"{name}: unknown node type {cfg.node_type!r}; "
                               f"known: {', '.join(sorted(self._node_types))}", field=name)

    def put_configuration(self, config_id: str, cfg: Configuration) -> bool:
        """Create or replace; returns True when it was new. Persists to the data dir."""
        validate_id(config_id, "configurationId")
        self._check(config_id, cfg, None)
        with self._lock:
            created = config_id not in self._configurations
            self._configurations[config_id] = cfg
            self._save()
        return created

    def put_node_type(self, name: str, nt: NodeType) -> bool:
        validate_id(name, "nodeType")
        with self._lock:
            created = name not in self._node_types
            self._node_types[name] = nt
            self._save()
        return created

    def _save(self) -> None:
        if self.overrides_path is None:
            return
        doc = {
            "node_types": {k: v.model_dump() for k, v in self._node_types.items()
                           if DEFAULT_NODE_TYPES.get(k) != v},
            "configurations": {k: v.model_dump() for k, v in self._configurations.items()
                               if DEFAULT_CONFIGURATIONS.get(k) != v},
        }
        self.overrides_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.overrides_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        tmp.replace(self.overrides_path)


def parse_toml(path: Path) -> CatalogFile:
    """Read and validate a catalog TOML file; errors name the file and the field."""
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"config file {path}: {exc.strerror}", field="config-file") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"config file {path}: not valid TOML: {exc}",
                           field="config-file") from exc
    try:
        parsed = CatalogFile.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, where=f"config file {path}: ", snake=True) from exc
    known = set(DEFAULT_NODE_TYPES) | set(parsed.node_types)
    for cid, cfg in parsed.configurations.items():
        validate_id(cid, f"configurations.{cid}")
        if cfg.node_type not in known:
            raise InvalidInput(
                f"config file {path}: configurations.{cid}.node_type: unknown node type "
                f"{cfg.node_type!r}", field=f"configurations.{cid}.node_type")
    for stream in parsed.serve.pipelines:
        validate_id(stream, f"serve.pipelines.{stream}")
    return parsed
