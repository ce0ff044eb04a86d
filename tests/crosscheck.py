"""Reads a Delta table with the Python `deltalake` package (an independent reader) and prints
its version and rows as JSON, for the Rust tests to compare with what deltadrop wrote."""
import json
import sys

from deltalake import DeltaTable


def cell(value):
    if value is None:
        return "∅"
    return str(value)


def main(path, order_by):
    table = DeltaTable(path)
    data = table.to_pyarrow_table().to_pylist()
    data.sort(key=lambda row: tuple(row[c] for c in order_by))
    columns = [field.name for field in table.schema().fields]
    rows = ["|".join(cell(row[c]) for c in columns) for row in data]
    history = [entry.get("operation") for entry in table.history()]
    print(json.dumps({"version": table.version(), "columns": columns, "rows": rows, "history": history}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
