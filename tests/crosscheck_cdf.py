"""Reads a Delta table's change data feed with the Python `deltalake` package (an independent
reader) and prints its rows as JSON, each as `version|change type|column|...` (nulls as `∅`),
ordered by version, then ORDER_BY, then change type, for the Rust tests to compare with
`deltadrop table --changes`.

Usage: crosscheck_cdf.py TABLE STARTING_VERSION ORDER_BY[,ORDER_BY...]"""
import json
import os
import sys

import pyarrow as pa
from deltalake import DeltaTable


def cell(value):
    if value is None:
        return "∅"
    return str(value)


def main(path, starting_version, order_by):
    table = DeltaTable(path)
    # deltalake 1.x returns an arro3 reader: pyarrow takes it through the Arrow stream interface.
    changes = pa.RecordBatchReader.from_stream(table.load_cdf(starting_version=starting_version))
    rows = changes.read_all().to_pylist()
    rows.sort(key=lambda r: (r["_commit_version"], tuple(r[c] for c in order_by), r["_change_type"]))
    columns = [field.name for field in table.schema().fields]
    lines = ["|".join([str(r["_commit_version"]), r["_change_type"]] + [cell(r[c]) for c in columns])
             for r in rows]
    print(json.dumps({"changes": lines}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","))
    sys.stdout.flush()
    os._exit(0)  # as tests/crosscheck.py: no interpreter teardown
