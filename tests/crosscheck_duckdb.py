"""Reads a Delta table with DuckDB's delta extension (delta-kernel-rs: a reader independent of
delta-rs and of the Python `deltalake` package) and prints its columns and rows as JSON, in the
format of crosscheck.py, for the Rust tests to compare with what deltadrop wrote.

Usage: crosscheck_duckdb.py TABLE ORDER_BY[,ORDER_BY...]"""
import json
import os
import pathlib
import sys

import duckdb
import duckdb_extension_delta


def cell(value):
    if value is None:
        return "∅"
    return str(value)


def main(path, order_by):
    extension = next(pathlib.Path(duckdb_extension_delta.__file__).parent.glob("extensions/*/delta.duckdb_extension"))
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension}'")
    order = ", ".join(f'"{c}"' for c in order_by)
    result = con.execute(f"SELECT * FROM delta_scan(?) ORDER BY {order}", [path])
    columns = [d[0] for d in result.description]
    rows = ["|".join(cell(v) for v in row) for row in result.fetchall()]
    print(json.dumps({"columns": columns, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
    sys.stdout.flush()
    os._exit(0)
