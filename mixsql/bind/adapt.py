"""Binding ``ADAPT USING algorithm(options) [LAG n STEPS]``: the algorithm and its options checked
(each error placed on its option), and what an adaptive stream needs from the rest of the statement."""

from __future__ import annotations

import dataclasses
import difflib
import typing as t
from decimal import Decimal

from mixsql.bind.base import _Base
from mixsql.bind.model import Adaptation
from mixsql.errors import MixSQLError
from mixsql.parse.ast import Stage

ALGORITHMS = ("ado",)
DEFAULT_LAG = 8  # steps: covers a DataLoader of 2 workers x prefetch_factor 2 with room to spare
MAX_LAG = 1 << 20


class Adapting(_Base):
    def _adapt(self, batch_size: int | None, limit: int | None, token_limit: int | None) -> Adaptation | None:
        node = self.mix.args.get("adapt")
        if node is None:
            return None
        from mixsql.mixing.ado import AdoConfig

        name = node.this.name.lower()
        if name not in ALGORITHMS:
            raise self.error(f"unknown ADAPT algorithm {node.this.name!r}", node.this,
                             hint=f"the algorithms: {', '.join(ALGORITHMS)}")
        fields = {f.name: f for f in dataclasses.fields(AdoConfig)}
        options: dict[str, t.Any] = {}
        for setting in node.expressions:
            key = setting.this.name.lower()
            if key in options:
                raise self.error(f"{key} is given twice", setting.this)
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                raise self.error(f"{name} has no option {setting.this.name!r}", setting.this,
                                 hint=(f"did you mean {close[0]}? " if close else "")
                                 + f"its options: {', '.join(sorted(fields))}")
            value = Decimal(setting.expression.this)
            if fields[key].type in ("int", int):
                if value != value.to_integral_value():
                    raise self.error(f"{key} must be an integer, not {setting.expression.this}", setting.expression)
                options[key] = int(value)
            else:
                options[key] = float(value)
            try:
                AdoConfig(**{key: options[key]})
            except MixSQLError as e:
                raise self.error(e.message, setting.expression, hint=e.hint) from None
        try:
            AdoConfig(**options)
        except MixSQLError as e:
            raise self.error(e.message, node, hint=e.hint) from None
        lag = DEFAULT_LAG if node.args.get("lag") is None else int(node.args["lag"].this)
        if not 0 <= lag <= MAX_LAG:
            raise self.error(f"LAG must be from 0 to {MAX_LAG:,} steps", node.args["lag"])
        if batch_size is None:
            raise self.error("ADAPT learns from each optimizer step: the statement needs BATCH SIZE <global batch "
                             "size in samples>", node, hint="add e.g. BATCH SIZE 64")
        if token_limit is not None or self._unit == "TOKENS":
            raise self.error("ADAPT mixes by samples for now: BY TOKENS and LIMIT n TOKENS are not supported with it",
                             node, hint="mix by samples, with LIMIT n SAMPLES or STEPS")
        if limit is None:
            raise self.error("ADAPT needs the stream's length in advance: LIMIT n SAMPLES or STEPS", node,
                             hint="add e.g. LIMIT 1000 STEPS")
        curriculum = self.mix.args.get("curriculum")
        stages = [i for i in (curriculum.expressions if curriculum is not None else []) if isinstance(i, Stage)]
        if stages:
            raise self.error("ADAPT takes its weights from the run; it cannot follow STAGE or RAMP points too",
                             stages[0], hint="drop the stages, or drop ADAPT")
        return Adaptation(algorithm=name, options=tuple(sorted(options.items())), lag=lag)
