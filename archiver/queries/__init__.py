"""Query files → `QueryDef`s: `load_dir` / `select` and the models, for `queries.load_dir(...)`.

model.py (QueryDef, Target), schema.py (a file as written, rules across keys), load.py (YAML,
problems, duplicate names), nrql.py (the NRQL scanner), samples.py (sample counts sent with
percentiles), funnels.py (funnel step names), names.py (what InfluxDB accepts as a name).
Whoever needs the scanner or another internal imports it from its module.
"""

from archiver.queries.load import LoadResult, NoQueryFiles, QueryFileProblem, load_dir, select
from archiver.queries.model import QueryDef, Target

__all__ = [
    "LoadResult",
    "NoQueryFiles",
    "QueryDef",
    "QueryFileProblem",
    "Target",
    "load_dir",
    "select",
]
