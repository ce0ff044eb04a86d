"""Compares two Delta tables row for row with the Python `deltalake` package (an independent
reader): the same columns, and the same rows once both are sorted by the key. Prints one JSON
line; exits 1 when they differ.

    same_tables.py <table> <table> <key column>
"""
import json
import sys

from deltalake import DeltaTable


def rows(path, key):
    table = DeltaTable(path)
    return table.version(), table.to_pyarrow_table().sort_by(key)


def main(first, second, key):
    (first_version, a), (second_version, b) = rows(first, key), rows(second, key)
    same = a.schema == b.schema and a.num_rows == b.num_rows and a.equals(b)
    print(json.dumps({"rows": a.num_rows, "other_rows": b.num_rows, "columns": a.num_columns,
                      "versions": [first_version, second_version], "same": same}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
