"""Near-dedup (MinHash + LSH) of ftx against `datasketch` and `rensa`, side by side in one run on
the standard corpus, and the precision and recall of each against exact Jaccard on a sample.

Targets (issue 19 item 2): >= 20x datasketch and >= 1.0x rensa in records/s, at equal settings
and recall. Equal settings: the same shingles (5-word n-grams of the lowercase letter-and-digit
words of a record's message contents), 128 permutations, 16 bands of 8 rows (rensa needs the
bands to divide the permutations), threshold 0.8; every tool runs the same dedup: records in
order, each queried against the kept ones, a candidate counted when its estimated Jaccard is
>= 0.8, the record kept (and inserted) when none is.

What is timed is texts in, duplicates out: ftx's stage alone (`_core.near_duplicates`, the
function `prepare --near-dedup` and `inspect` use), on one thread and on all cores; the peers'
Python shingling plus their MinHash and LSH (their time without the shingling is printed too).
Run: .venv/bin/python -m pytest benches/test_near_dedup.py -p no:cacheprovider -q -s
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftx import _core

NGRAM, PERMUTATIONS, BANDS, THRESHOLD = 5, 128, 16, 0.8
SAMPLE = 2000
WORD = re.compile(r"[^\W_]+")

# Dropped record -> the kept record it was matched to.
Matches = dict[int, int]


def _texts(corpus: Path) -> list[str]:
    with corpus.open(encoding="utf-8") as f:
        return ["\n".join(m["content"] for m in json.loads(line)["messages"]) for line in f]


def shingles(text: str) -> set[str]:
    """ftx's shingles, in Python: a text with fewer words than the n-gram is one shingle."""
    words = WORD.findall(text.lower())
    if len(words) < NGRAM:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def run_ftx(texts: list[str], threads: int) -> Matches:
    found = _core.near_duplicates(
        texts,
        ngram=NGRAM,
        permutations=PERMUTATIONS,
        bands=BANDS,
        threshold=THRESHOLD,
        threads=threads,
    )
    return {m: kept for kept, members in found for m, _ in members}


def _dedup(sigs: list[Any], lsh: Any, query: Callable[[Any], list[int]], jaccard: Any) -> Matches:
    """The dedup every tool runs: query the kept records, verify, keep or match the earliest."""
    found: Matches = {}
    for i, sig in enumerate(sigs):
        if sig is None:
            continue
        hits = [k for k in query(sig) if jaccard(sig, sigs[k]) >= THRESHOLD]
        if hits:
            found[i] = min(hits)
        else:
            lsh.insert(i, sig)
    return found


def run_datasketch(sets: list[set[str]]) -> Matches:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=PERMUTATIONS, params=(BANDS, PERMUTATIONS // BANDS))
    sigs: list[Any] = []
    for s in sets:
        if not s:
            sigs.append(None)
            continue
        m = MinHash(num_perm=PERMUTATIONS)
        m.update_batch([x.encode("utf-8") for x in s])
        sigs.append(m)
    return _dedup(sigs, lsh, lsh.query, lambda a, b: a.jaccard(b))


def run_rensa(sets: list[set[str]]) -> Matches:
    """rensa's bulk constructor (its fastest path to one sketch per record) and its LSH."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=PERMUTATIONS, num_bands=BANDS)
    made = iter(RMinHash.from_token_sets([list(s) for s in sets if s], PERMUTATIONS, 42))
    sigs = [next(made) if s else None for s in sets]
    return _dedup(sigs, lsh, lsh.query, lambda a, b: a.jaccard(b))


def exact(sets: list[set[str]]) -> tuple[Matches, Callable[[int, int], float]]:
    """The same dedup with exact Jaccard (an inverted index of the kept records' shingles)."""
    postings: dict[str, list[int]] = {}
    found: Matches = {}
    for j, s in enumerate(sets):
        shared: Counter[int] = Counter()
        for x in s:
            shared.update(postings.get(x, ()))
        hits = [i for i, c in shared.items() if c / (len(sets[i]) + len(s) - c) >= THRESHOLD]
        if hits:
            found[j] = min(hits)
            continue
        for x in s:
            postings.setdefault(x, []).append(j)

    def jaccard(a: int, b: int) -> float:
        return len(sets[a] & sets[b]) / max(1, len(sets[a] | sets[b]))

    return found, jaccard


def quality(
    found: Matches, truth: Matches, jaccard: Callable[[int, int], float]
) -> dict[str, float]:
    """Record level: precision and recall of the dropped records against exact Jaccard's; pair
    level: the share of matches whose exact Jaccard reaches the threshold."""
    hit = len(found.keys() & truth.keys())
    return {
        "precision": hit / max(1, len(found)),
        "recall": hit / max(1, len(truth)),
        "pair_precision": sum(jaccard(d, k) >= THRESHOLD for d, k in found.items())
        / max(1, len(found)),
    }


def _timed(fn: Callable[[], Matches]) -> tuple[Matches, float, float]:
    """The result, the wall time and the CPU time of the process (all its threads): the cores
    are shared, and the CPU time is the work whatever else runs."""
    t, cpu = time.perf_counter(), time.process_time()
    found = fn()
    return found, time.perf_counter() - t, time.process_time() - cpu


def test_near_dedup_against_peers(benchmark: Any, corpus: Path) -> None:
    texts = _texts(corpus)
    n = len(texts)
    res: dict[str, dict[str, float]] = {}
    results: dict[str, Matches] = {}
    cores = _core.num_threads()
    results["ftx_1"], secs, cpu = benchmark.pedantic(
        lambda: _timed(lambda: run_ftx(texts, 1)), rounds=1
    )
    res["ftx_1"] = {"seconds": secs, "cpu_s": cpu}
    results[f"ftx_{cores}"], secs, cpu = _timed(lambda: run_ftx(texts, cores))
    res[f"ftx_{cores}"] = {"seconds": secs, "cpu_s": cpu}
    start, cpu_start = time.perf_counter(), time.process_time()
    sets = [shingles(text) for text in texts]
    shingling, shingling_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    for name, fn in (("rensa", run_rensa), ("datasketch", run_datasketch)):
        results[name], secs, cpu = _timed(lambda fn=fn: fn(sets))  # type: ignore[misc]
        res[name] = {
            "seconds": secs + shingling,
            "cpu_s": cpu + shingling_cpu,
            "without_shingling_s": secs,
            "without_shingling_cpu_s": cpu,
        }
    for name, r in res.items():
        r["records_per_s"] = n / r["seconds"]
        r["records_per_cpu_s"] = n / r["cpu_s"]
        r["dropped"] = len(results[name])
    # The same records dropped, or the ratios compare different work.
    ref = res["ftx_1"]["dropped"]
    for name, r in res.items():
        assert abs(r["dropped"] - ref) <= 0.02 * n, (name, r["dropped"], ref)
    assert results["ftx_1"] == results[f"ftx_{cores}"], "threads changed the result"

    sample = [shingles(t) for t in texts[:SAMPLE]]
    truth, jaccard = exact(sample)
    quality_of = {
        "ftx": quality(run_ftx(texts[:SAMPLE], 1), truth, jaccard),
        "rensa": quality(run_rensa(sample), truth, jaccard),
        "datasketch": quality(run_datasketch(sample), truth, jaccard),
    }
    benchmark.extra_info.update({"speed": res, "quality": quality_of})

    print(f"\n{n:,} records; the peers' shingling in Python: {shingling:.1f}s")
    for name, r in res.items():
        extra = (
            f" ({r['without_shingling_s']:.1f}s without the shingling)"
            if "without_shingling_s" in r
            else ""
        )
        print(
            f"  {name}: {r['seconds']:.2f}s wall{extra}, {r['cpu_s']:.2f}s CPU, "
            f"{r['records_per_s']:,.0f} records/s, {r['dropped']:,.0f} dropped"
        )
    ds, rs = res["datasketch"], res["rensa"]
    for name in ("ftx_1", f"ftx_{cores}"):
        f = res[name]
        for clock, per, bare in (
            ("wall", "seconds", "without_shingling_s"),
            ("CPU", "cpu_s", "without_shingling_cpu_s"),
        ):
            print(
                f"  {name} ({clock} time) / datasketch {ds[per] / f[per]:.1f}x (target >= 20), "
                f"/ rensa {rs[per] / f[per]:.2f}x (target >= 1.0); without the peers' "
                f"shingling: {ds[bare] / f[per]:.1f}x, {rs[bare] / f[per]:.2f}x"
            )
    print(f"quality on the first {SAMPLE:,} records ({len(truth)} duplicates by exact Jaccard):")
    for name, q in quality_of.items():
        print(
            f"  {name}: precision {q['precision']:.3f}, recall {q['recall']:.3f}, "
            f"pair precision {q['pair_precision']:.3f}"
        )
    assert quality_of["ftx"]["recall"] >= 0.9 and quality_of["ftx"]["precision"] >= 0.9
