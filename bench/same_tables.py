"""Compares two Delta tables row for row with the Python `deltalake` package (an independent
reader): the same columns, and the same rows once both are sorted by the key. Prints one JSON
line; exits 1 when they differ.

    same_tables.py <table> <table> <key column> [storage options as JSON]
"""
import json
import os
import sys

from deltalake import DeltaTable


def rows(path, key, options):
    table = DeltaTable(path, storage_options=options)
    return table.version(), table.to_pyarrow_table().sort_by(key)


def main(first, second, key, options=None):
    options = json.loads(options) if options else None
    (first_version, a), (second_version, b) = rows(first, key, options), rows(second, key, options)
    same = a.schema == b.schema and a.num_rows == b.num_rows and a.equals(b)
    print(json.dumps({"rows": a.num_rows, "other_rows": b.num_rows, "columns": a.num_columns,
                      "versions": [first_version, second_version], "same": same}))
    return 0 if same else 1


if __name__ == "__main__":
    code = main(*sys.argv[1:])
    # deltalake can abort during interpreter teardown after all work is done (see
    # tests/crosscheck.py): the answer is printed, so leave without the teardown.
    sys.stdout.flush()
    os._exit(code)
