"""The data section of a training config (torchtitan / llm-foundry style), validated, as one call.

A trainer's YAML names a ``.mixsql`` file and what the run needs to serve it::

    data:
      catalog: .mixsql              # the catalog directory (relative paths: to the config file)
      mixture: mixtures/pretrain.mixsql
      params: {min_quality: 0.3}    # the statement's :parameters
      seq_len: 2048                 # packed sequences (omit for samples)
      batch_size: 8                 # per rank; x world size must be the statement's BATCH SIZE
      num_workers: 2
      pack: mixed                   # or component
      datasets:                     # registered when the catalog lacks them (optional)
        corpus: {paths: ["data/*.parquet"], tokenizer: tokenizer.json}
      storage_options: {endpoint_url: "http://minio:9000"}   # data in object stores (credentials: env)
      cache_dir: /local/ssd/mixsql-blocks                    # the node's cache of remote blocks
      memory_bytes: 268435456                                # decoded blocks each worker holds (default 1 GiB)
      compact: [text]               # read a compacted cache of these columns (``mixsql cache``)

``mixsql.from_config(cfg["data"], base=config_dir)`` checks every key (an unknown or mistyped one
is an error naming it and the known ones), registers what is missing, loads the mixture, and
checks the batch sizes against the statement; ``.dataset(rank, world_size)`` and ``.loader(ds)``
then give what the training loop iterates.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing as t
from pathlib import Path

from mixsql.errors import MixSQLError

KEYS = {"catalog": str, "mixture": str, "params": dict, "seq_len": int, "batch_size": int, "num_workers": int,
        "pack": str, "datasets": dict, "tokenizer": str, "eos": (str, int), "bos": (str, int),
        "storage_options": dict, "cache_dir": str, "memory_bytes": int, "compact": list}
REQUIRED = ("catalog", "mixture", "batch_size")
DATASET_KEYS = {"paths": (list, str), "tokenizer": str, "tokens": str, "content": list}


class ConfigError(MixSQLError):
    """A data config that cannot be used: which key, what is wrong, what to write."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The validated data section (paths resolved)."""

    catalog: Path
    mixture: Path
    batch_size: int
    params: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    seq_len: int | None = None
    num_workers: int = 0
    pack: str = "mixed"
    datasets: dict[str, dict[str, t.Any]] = dataclasses.field(default_factory=dict)
    tokenizer: str | None = None
    eos: str | int | None = None
    bos: str | int | None = None
    storage_options: dict[str, t.Any] | None = dataclasses.field(default=None, repr=False)
    cache_dir: str | None = None
    memory_bytes: int | None = None  # decoded blocks each worker holds (default: the reader's)
    compact: list[str] | None = None  # the columns of the compacted cache to read instead of the sources


def parse_config(section: t.Mapping[str, t.Any], base: str | os.PathLike[str] | None = None) -> DataConfig:
    """Check a data section key by key and resolve its paths against ``base``."""
    if not isinstance(section, t.Mapping):
        raise ConfigError(f"the data section must be a mapping, not {type(section).__name__}",
                          hint="data: {catalog: ..., mixture: ..., batch_size: ...}")
    for key, value in section.items():
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), list(KEYS), n=1)
            raise ConfigError(f"data.{key} is not a data option", hint=(f"did you mean {close[0]}? " if close else "")
                              + f"the options: {', '.join(sorted(KEYS))}")
        kind = KEYS[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(f"data.{key} must be {names}, not {value!r}")
    missing = [k for k in REQUIRED if section.get(k) is None]
    if missing:
        raise ConfigError(f"data.{missing[0]} is missing", hint="the data section needs: " + ", ".join(REQUIRED))
    root = Path(base) if base is not None else Path.cwd()

    def path(value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() or "://" in value else root / p

    for key in ("batch_size", "seq_len"):
        if section.get(key) is not None and section[key] < (1 if key == "batch_size" else 2):
            raise ConfigError(f"data.{key} must be at least {1 if key == 'batch_size' else 2}, not {section[key]}")
    if section.get("num_workers") is not None and section["num_workers"] < 0:
        raise ConfigError(f"data.num_workers cannot be negative, not {section['num_workers']}")
    if section.get("memory_bytes") is not None and section["memory_bytes"] < 1:
        raise ConfigError(f"data.memory_bytes must be positive (bytes of decoded blocks each worker holds), "
                          f"not {section['memory_bytes']}")
    if section.get("pack", "mixed") not in ("mixed", "component"):
        raise ConfigError(f"data.pack must be mixed or component, not {section['pack']!r}")
    datasets: dict[str, dict[str, t.Any]] = {}
    for name, spec in (section.get("datasets") or {}).items():
        if not isinstance(spec, t.Mapping) or "paths" not in spec:
            raise ConfigError(f"data.datasets.{name} must be a mapping with paths", hint="{paths: ['data/*.parquet']}")
        for key, value in spec.items():
            if key not in DATASET_KEYS or not isinstance(value, DATASET_KEYS[key]):
                raise ConfigError(f"data.datasets.{name}.{key} is not a dataset option of that type",
                                  hint=f"the options: {', '.join(sorted(DATASET_KEYS))}")
        paths = [spec["paths"]] if isinstance(spec["paths"], str) else list(spec["paths"])
        datasets[str(name)] = {**spec, "paths": [str(path(p)) if "://" not in p else p for p in paths],
                               **({"tokenizer": str(path(spec["tokenizer"]))} if spec.get("tokenizer") else {})}
    mixture = path(section["mixture"])
    if not mixture.is_file():
        raise ConfigError(f"data.mixture: no file {mixture}", hint="a .mixsql file, relative to the config file")
    return DataConfig(catalog=path(section["catalog"]), mixture=mixture, batch_size=section["batch_size"],
                      params=dict(section.get("params") or {}), seq_len=section.get("seq_len"),
                      num_workers=section.get("num_workers") or 0, pack=section.get("pack") or "mixed",
                      datasets=datasets, tokenizer=str(path(section["tokenizer"])) if section.get("tokenizer") else None,
                      eos=section.get("eos"), bos=section.get("bos"),
                      storage_options=dict(section["storage_options"]) if section.get("storage_options") else None,
                      cache_dir=str(path(section["cache_dir"])) if section.get("cache_dir") else None,
                      memory_bytes=section.get("memory_bytes"), compact=_columns(section.get("compact")))


def _columns(value: t.Any) -> list[str] | None:
    if value is None:
        return None
    if not value or not all(isinstance(c, str) for c in value):
        raise ConfigError(f"data.compact must list the columns to cache, not {value!r}", hint="compact: [text]")
    return list(value)


class Data:
    """What a data config gives a training loop: the mixture, its datasets per rank, their loader."""

    def __init__(self, config: DataConfig, *, register: bool = True) -> None:
        from mixsql.api import connect

        self.config = config
        remote: dict[str, t.Any] = {}
        if config.storage_options is not None:
            remote["storage_options"] = config.storage_options
        if config.cache_dir is not None:
            remote["cache_dir"] = config.cache_dir
        self.connection = connect(config.catalog, **remote)
        present = set(self.connection.datasets())
        for name, spec in config.datasets.items():
            if name in present:
                continue
            if not register:
                raise ConfigError(f"dataset {name!r} is not registered in {config.catalog}",
                                  hint="register it first (one process), e.g. rank 0 before a barrier")
            self.connection.register(name, spec["paths"], tokenizer=spec.get("tokenizer"), tokens=spec.get("tokens"),
                                     content=spec.get("content"))
        self.mix = self.connection.load(config.mixture, params=config.params)
        if config.compact is not None:  # built by one process; the others (every rank at once) wait for it
            self.mix.cache(config.compact)

    @property
    def components(self) -> list[str]:
        return list(self.mix.components)

    def dataset(self, rank: int | None = None, world_size: int | None = None, start_step: int = 0) -> t.Any:
        """This rank's ``MixDataset`` (whole batches: give the loader ``batch_size=None``), after
        checking the config's batch size x world size against the statement's BATCH SIZE."""
        from mixsql.world import topology

        rank, world_size = topology(rank, world_size)
        declared = self.mix.bound.batch_size
        if declared is not None and declared != self.config.batch_size * world_size:
            raise ConfigError(f"data.batch_size {self.config.batch_size} x world size {world_size} = "
                              f"{self.config.batch_size * world_size}, but {self.config.mixture.name} says BATCH SIZE "
                              f"{declared}", hint=f"set data.batch_size to {declared // world_size}"
                              if declared % world_size == 0 else f"use a world size that divides {declared}")
        c = self.config
        return self.mix.torch_dataset(batch_size=c.batch_size, rank=rank, world_size=world_size,
                                      start_step=start_step, seq_len=c.seq_len, tokenizer=c.tokenizer, eos=c.eos,
                                      bos=c.bos, pack=c.pack, batched=True,
                                      **({} if c.memory_bytes is None else {"memory_bytes": c.memory_bytes}))

    def loader(self, dataset: t.Any, **options: t.Any) -> t.Any:
        """A DataLoader over ``dataset`` (batches are made by the dataset; ``num_workers`` from the config)."""
        import torch.utils.data

        from mixsql.dataset import batch_as_is

        options.setdefault("collate_fn", batch_as_is)  # the dataset's batches as they are
        return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.config.num_workers, **options)


def from_config(section: t.Mapping[str, t.Any], *, base: str | os.PathLike[str] | None = None,
                register: bool = True) -> Data:
    """The data section of a training config (module docstring) as ``Data``: validated, datasets
    registered when missing (``register=False`` refuses instead: for all ranks but one)."""
    return Data(parse_config(section, base), register=register)


__all__: t.Sequence[str] = ["ConfigError", "Data", "DataConfig", "from_config", "parse_config"]
