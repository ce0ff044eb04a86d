"""Reads a Delta table with the Python `deltalake` package (an independent reader) and prints
its version and rows as JSON, for the Rust tests to compare with what deltadrop wrote.

Usage: crosscheck.py TABLE ORDER_BY[,ORDER_BY...] [STORAGE_OPTIONS_JSON]"""
import json
import os
import sys

from deltalake import DeltaTable


def cell(value):
    if value is None:
        return "∅"
    return str(value)


def main(path, order_by, storage_options):
    table = DeltaTable(path, storage_options=storage_options)
    data = table.to_pyarrow_table().to_pylist()
    data.sort(key=lambda row: tuple(row[c] for c in order_by))
    columns = [field.name for field in table.schema().fields]
    rows = ["|".join(cell(row[c]) for c in columns) for row in data]
    history = [entry.get("operation") for entry in table.history()]
    partitions = list(table.metadata().partition_columns)
    print(json.dumps({"version": table.version(), "columns": columns, "rows": rows, "history": history,
                      "partition_columns": partitions}))


if __name__ == "__main__":
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    main(sys.argv[1], sys.argv[2].split(","), options)
    # deltalake 1.6 can abort during interpreter teardown ("terminate called without an active
    # exception") after all work is done; the answer is printed, so leave without the teardown.
    sys.stdout.flush()
    os._exit(0)
