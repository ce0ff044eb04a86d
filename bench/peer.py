"""The peer: the same work done with the Python `deltalake` package and pyarrow, as a Python
Lambda would do it. One piece of work per process; prints one JSON line.

    peer.py write <csv> <table> [<partition column>]   CSV -> new Delta table (streamed batches)
    peer.py merge <csv> <table> [<partition column>]   MERGE the CSV into the table on o_orderkey
                                                       (and the partition column, as deltadrop)
"""
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.csv as csv
from deltalake import DeltaTable, write_deltalake

SCHEMA = pa.schema([
    ("o_orderkey", pa.int64()), ("o_custkey", pa.int64()), ("o_orderstatus", pa.string()),
    ("o_totalprice", pa.float64()), ("o_orderdate", pa.date32()), ("o_orderpriority", pa.string()),
    ("o_clerk", pa.string()), ("o_shippriority", pa.int64()), ("o_comment", pa.string()),
])


def reader(path):
    return csv.open_csv(path, convert_options=csv.ConvertOptions(column_types=SCHEMA),
                        read_options=csv.ReadOptions(block_size=1 << 20))


def main(command, path, table, partition=None):
    started = time.perf_counter()
    if command == "write":
        write_deltalake(table, reader(path), mode="append",
                        partition_by=[partition] if partition else None)
        result = {}
    else:
        source = reader(path).read_all()
        predicate = "t.o_orderkey = s.o_orderkey"
        if partition:
            predicate += f" AND t.{partition} = s.{partition}"
        metrics = (DeltaTable(table)
                   .merge(source=source, predicate=predicate,
                          source_alias="s", target_alias="t")
                   .when_matched_update_all().when_not_matched_insert_all().execute())
        result = {"inserted": metrics.get("num_target_rows_inserted"),
                  "updated": metrics.get("num_target_rows_updated"),
                  "files_scanned": metrics.get("num_target_files_scanned")}
    seconds = time.perf_counter() - started
    size = os.path.getsize(path)
    result.update({"seconds": seconds, "mb_per_s": size / 1e6 / seconds})
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:5])
