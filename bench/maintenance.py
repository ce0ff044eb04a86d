"""What maintenance does to a table after many loads: files and bytes before and after
`deltadrop maintain`, and the time of the next MERGE on the maintained table against an
unmaintained copy (same file, same machine, same build).

    python3 bench/maintenance.py [--deltadrop PATH] [--rows N] [--updates N]

Two shapes of load, each from a fresh bucket: `spread` (each file updates rows spread over the
whole key range and inserts a few) and `append` (each file brings new keys only). Prints a
markdown table; docs/benchmarks.md records a run.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CONFIG = """[[feeds]]
name = "orders"
incoming = "incoming/orders/"
table = "tables/orders"
keys = ["id"]
target_file_mb = 1
"""


def run(deltadrop: str, *args: str) -> str:
    done = subprocess.run([deltadrop, *args], capture_output=True, text=True, check=True)
    return done.stdout


def load(deltadrop: str, bucket: Path, name: str, rows: list[tuple[int, str, float]]) -> float:
    key = f"incoming/orders/{name}.csv"
    path = bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,name,amount\n" + "".join(f"{i},{n},{a}\n" for i, n, a in rows))
    start = time.perf_counter()
    run(deltadrop, "run", key, "--bucket", str(bucket))
    return time.perf_counter() - start


def data_files(table: Path) -> tuple[int, int]:
    files = [p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts]
    return len(files), sum(p.stat().st_size for p in files)


def referenced(deltadrop: str, table: Path) -> int:
    out = run(deltadrop, "table", str(table), "--history", "1", "--rows", "0")
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("files")))


def scenario(deltadrop: str, shape: str, rows: int, updates: int) -> dict[str, object]:
    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix=f"deltadrop-maintain-{shape}-"))
    bucket = work / "bucket"
    bucket.mkdir()
    (bucket / "deltadrop.toml").write_text(CONFIG)
    load(deltadrop, bucket, "base", [(i, f"n{i}", i * 0.5) for i in range(rows)])
    next_key = rows
    batch = max(rows // 100, 10)
    for u in range(updates):
        if shape == "spread":
            chosen = [(rng.randrange(rows), f"u{u}", float(u)) for _ in range(batch)]
        else:
            chosen = [(next_key + i, f"a{u}", float(u)) for i in range(batch)]
            next_key += batch
        load(deltadrop, bucket, f"u{u}", chosen)
    table = bucket / "tables/orders"
    copy = work / "unmaintained"
    shutil.copytree(bucket, copy)
    before_ref, (before_disk, before_bytes) = referenced(deltadrop, table), data_files(table)
    start = time.perf_counter()
    run(deltadrop, "maintain", "--bucket", str(bucket))
    maintain_seconds = time.perf_counter() - start
    after_ref, (after_disk, after_bytes) = referenced(deltadrop, table), data_files(table)
    last = [(rng.randrange(rows), "last", 1.0) for _ in range(batch)]
    merge_maintained = min(load(deltadrop, bucket, f"last{k}", last) for k in range(3))
    merge_unmaintained = min(load(deltadrop, copy, f"last{k}", last) for k in range(3))
    shutil.rmtree(work)
    return {
        "shape": shape,
        "referenced files": f"{before_ref} → {after_ref}",
        "files on disk": f"{before_disk} → {after_disk}",
        "MB on disk": f"{before_bytes / 1e6:.1f} → {after_bytes / 1e6:.1f}",
        "maintain s": f"{maintain_seconds:.1f}",
        "next MERGE, maintained / unmaintained": f"{merge_maintained / merge_unmaintained:.2f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/deltadrop-target"))
    parser.add_argument("--deltadrop", default=f"{target}/debug/deltadrop")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=50)
    args = parser.parse_args()
    results = [scenario(args.deltadrop, shape, args.rows, args.updates) for shape in ("spread", "append")]
    columns = list(results[0])
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
