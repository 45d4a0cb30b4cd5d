"""A/B of the reader alone: `python bench/ab_reader.py CHECKOUT` streams bench (a)'s mixture with the
mixsql of CHECKOUT (a directory holding a mixsql tree, e.g. a `git worktree` of an older commit)
against the oracle, 5 interleaved repetitions, and prints the medians and their ratio. Run it for
two checkouts in turn to tell a reader regression from machine noise; needs `make bench`'s data."""

import statistics
import sys

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/bench")
import mixsql  # noqa: E402
import run as b  # noqa: E402

con = mixsql.connect(b.DATA / "catalog", create=False)
mix = con.mix(b.STATEMENT)
b.arm_mixsql(mix)
plan = mix.plan()
needed = b.touched(plan, plan.positions_rows(0, len(plan)))
m, o = [], []
for _ in range(5):
    m.append(b.arm_mixsql(mix)["seconds"])
    o.append(b.arm_oracle(plan, needed)["seconds"])
print(f"{mixsql.__file__}: mixsql {statistics.median(m):.3f} s, oracle {statistics.median(o):.3f} s, "
      f"mixsql / oracle {statistics.median(o) / statistics.median(m):.3f}")
