"""`ftx prepare` never destroys what it did not write, reads input as what it is, and a damaged
artifact is never taken for a good one (issue 17's cases, as a careless user would hit them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftx
from ftx.data import load_dataset
from ftx.errors import ConfigError, DataError

# Each example prepares and reads an artifact; `make fuzz` (FUZZ_EXAMPLES) runs a twentieth as
# many of these as of the cheap properties of test_fuzz.py.
ARTIFACT_EXAMPLES = max(60, int(os.environ.get("FUZZ_EXAMPLES", "0")) // 20)


def _ftx(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftx.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_user_folder_at_out_is_refused_and_kept(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(example_data, d / "chat.jsonl")
    (d / "notes.txt").write_text("k\n")
    before = _files(d)
    # the input inside --out: refused even when forced
    for force in ([], ["--force"]):
        done = _ftx("prepare", d / "chat.jsonl", "--model", tiny_model, "--out", d, *force)
        assert done.returncode == 2, done.stderr
        assert "contains the input" in done.stderr and "Traceback" not in done.stderr
        assert _files(d) == before
    # a folder of the user's, the input elsewhere: refused unless forced
    other = tmp_path / "u"
    other.mkdir()
    (other / "notes.txt").write_text("k\n")
    done = _ftx("prepare", example_data, "--model", tiny_model, "--out", other)
    assert done.returncode == 2 and "not a prepared artifact" in done.stderr, done.stderr
    assert "--force" in done.stderr
    assert (other / "notes.txt").read_text() == "k\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".u.") and "lock" not in p.name]


def test_a_file_a_link_and_the_working_directory_at_out(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    f = tmp_path / "f"
    f.write_text("mine")
    done = _ftx("prepare", example_data, "--model", tiny_model, "--out", f)
    assert done.returncode == 2 and "is a file" in done.stderr
    assert f.read_text() == "mine" and not list(tmp_path.glob(".f.*.*"))

    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("k")
    link = tmp_path / "link"
    link.symlink_to(target)
    done = _ftx("prepare", example_data, "--model", tiny_model, "--out", link, "--force")
    assert done.returncode == 2 and "symbolic link" in done.stderr
    assert link.is_symlink() and (target / "keep").read_text() == "k"

    work = tmp_path / "w" / "inner"
    work.mkdir(parents=True)
    done = _ftx("prepare", example_data, "--model", tiny_model, "--out", "..", "--force", cwd=work)
    assert done.returncode == 2 and "working directory" in done.stderr
    assert work.is_dir()


def test_an_own_artifact_is_replaced_and_stale_staging_removed(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    out = tmp_path / "o"
    ftx.prepare(example_data, out=out, model=tiny_model, valid=10)
    (tmp_path / ".o.dead01.partial").mkdir()  # a SIGKILLed prepare left this
    (tmp_path / ".o.dead01.partial" / "train.tokens.npy").write_bytes(b"x")
    again = ftx.prepare(example_data, out=out, model=tiny_model, valid=20)
    assert again.splits["valid"].records == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # the lock went with the run
    # an own artifact with a file added by the user is no longer only ftx's
    (out / "notes.txt").write_text("k")
    with pytest.raises(ConfigError, match=r"files ftx did not write \(notes.txt\)"):
        ftx.prepare(example_data, out=out, model=tiny_model, valid=30)
    assert (out / "notes.txt").read_text() == "k"


def test_a_truncated_array_is_rebuilt_and_refused_where_read(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    out = tmp_path / "o"
    ftx.prepare(example_data, out=out, model=tiny_model)
    tokens = out / "train.tokens.npy"
    whole = tokens.read_bytes()
    tokens.write_bytes(whole[: len(whole) - 8])
    with pytest.raises(DataError, match="changed since ftx prepare wrote it"):
        load_dataset(out, "train")
    again = ftx.prepare(example_data, out=out, model=tiny_model)
    assert not again.cached and tokens.read_bytes() == whole
    # same size, other bytes: the digest tells
    flipped = bytearray(whole)
    flipped[-1] ^= 1
    tokens.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="xxh3"):
        load_dataset(out, "train")
    assert not ftx.prepare(example_data, out=out, model=tiny_model).cached


def test_token_ids_beyond_the_embedding_are_refused(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    out = tmp_path / "o"
    ftx.prepare(example_data, out=out, model=tiny_model)
    ds = load_dataset(out, "train")
    top = int(np.asarray(ds.tokens).max())
    load_dataset(out, "train", vocab_rows=top + 1)
    with pytest.raises(DataError, match=f"token id {top}.*embedding has {top} rows"):
        load_dataset(out, "train", vocab_rows=top)


def test_a_damaged_manifest_or_array_is_a_clear_error(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    from ftx import _core

    out = tmp_path / "o"
    ftx.prepare(example_data, out=out, model=tiny_model)
    manifest = json.loads((out / "manifest.json").read_text())
    # a mask value of 2, written with a matching checksum: the check of values still refuses it
    mask = np.load(out / "train.mask.npy")
    mask[0] = 2
    np.save(out / "train.mask.npy", mask)
    size, digest = _core.file_digest(out / "train.mask.npy")
    manifest["splits"]["train"]["checks"]["mask"] = {"bytes": size, "xxh3": digest}
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="mask values other than 0 and 1"):
        load_dataset(out, "train")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_dataset(out, "train")


def _prepare_one(tmp_path: Path, tiny_model: Path, name: str, data: bytes) -> ftx.PrepareReport:
    src = tmp_path / name
    src.write_bytes(data)
    return ftx.prepare(src, out=tmp_path / f"out-{name}", model=tiny_model, dedup=False)


LINE = (
    b'{"messages": [{"role": "user", "content": "hi %d"}, {"role": "assistant", "content": "ok"}]}'
)


def test_json_lines_whose_first_line_is_an_array_lose_nothing(
    tmp_path: Path, tiny_model: Path
) -> None:
    lines = [b"[" + LINE % 0 + b"]", *(LINE % i for i in range(1, 5))]
    data = b"\n".join(lines) + b"\n"
    report = _prepare_one(tmp_path, tiny_model, "chat.jsonl", data)
    # the array line is one record (rejected: not a conversation), the other four are kept
    assert report.splits["train"].records == 4
    assert report.records_read == 5
    with pytest.raises(DataError, match=r"chat\.json:2: data after the end of the top-level"):
        _prepare_one(tmp_path, tiny_model, "chat.json", data)


def test_byte_order_marks(tmp_path: Path, tiny_model: Path) -> None:
    data = b"\n".join(LINE % i for i in range(3)) + b"\n"
    report = _prepare_one(tmp_path, tiny_model, "bom.jsonl", b"\xef\xbb\xbf" + data)
    assert report.splits["train"].records == 3 and report.rejected == 0
    utf16 = ("\ufeff" + data.decode()).encode("utf-16-le")
    with pytest.raises(DataError, match="UTF-16"):
        _prepare_one(tmp_path, tiny_model, "wide.jsonl", utf16)


def test_the_rejects_kept_beside_out_replace_a_link_instead_of_writing_through_it(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "o.rejects.jsonl").symlink_to(victim)
    # every record rejected: the run fails and keeps its rejects beside --out
    done = _ftx(
        "prepare", example_data, "--model", tiny_model, "--out", tmp_path / "o",
        "--max-reject-ratio", "0.0001",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert victim.read_text() == "precious"
    kept = tmp_path / "o.rejects.jsonl"
    assert not kept.is_symlink() and json.loads(kept.read_text().splitlines()[0])["code"]


def test_a_second_writer_of_one_out_fails_clearly(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    import fcntl

    out = tmp_path / "o"
    # Another writer holds the lock (an flock, which ftx's Python verbs take as well).
    with (tmp_path / ".o.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = _ftx("prepare", example_data, "--model", tiny_model, "--out", out)
        assert second.returncode == 2, second.stderr
        assert "another ftx process is writing there" in second.stderr
        assert not out.exists()
    assert ftx.prepare(example_data, out=out, model=tiny_model).splits["train"].records > 0


def test_bad_options_and_a_corrupt_table_are_messages_not_tracebacks(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    done = _ftx(
        "prepare", example_data, "--model", tiny_model, "--out", tmp_path / "o", "--seed", "-1"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "-1" in done.stderr
    with pytest.raises(ConfigError, match="seed = -1"):
        ftx.prepare(example_data, out=tmp_path / "o", model=tiny_model, seed=-1)
    pytest.importorskip("polars")
    table = tmp_path / "broken.parquet"
    table.write_bytes(b"PAR1" + os.urandom(200))
    done = _ftx("prepare", table, "--model", tiny_model, "--out", tmp_path / "o")
    assert done.returncode == 1, done.stderr
    assert "broken.parquet: not a readable Parquet file" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    src = Path(__file__).resolve().parents[2] / "examples" / "data" / "chat.jsonl"
    out = tmp_path_factory.mktemp("artifact") / "o"
    ftx.prepare(src, out=out, model=tiny_model, valid=10)
    return out


@settings(
    max_examples=ARTIFACT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(["train.tokens.npy", "train.mask.npy", "train.offsets.npy"]),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4),
)
def test_random_damage_to_an_array_is_always_refused(
    artifact: Path, tmp_path_factory: pytest.TempPathFactory, name: str, cut: int | None,
    flips: list[tuple[int, int]],
) -> None:  # fmt: skip
    copy = tmp_path_factory.mktemp("damaged") / "o"
    shutil.copytree(artifact, copy)
    data = bytearray((copy / name).read_bytes())
    for at, bits in flips:
        data[at % len(data)] ^= bits
    if cut is not None:
        data = data[: min(cut, len(data) - 1)]
    if bytes(data) == (artifact / name).read_bytes():
        return
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(DataError):
        load_dataset(copy, "train")


@settings(
    max_examples=ARTIFACT_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.lists(
        st.sampled_from(["splits", "train", "files", "checks", "tokens", "bytes", "xxh3"]),
        min_size=1,
        max_size=4,
    ),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=8), st.lists(st.integers())),
)
def test_random_edits_of_the_manifest_are_refused_or_harmless(
    artifact: Path, tmp_path_factory: pytest.TempPathFactory, path: list[str], value: object
) -> None:
    copy = tmp_path_factory.mktemp("edited") / "o"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    node = manifest
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            break
        node = node[key]
    else:
        if isinstance(node, dict):
            node[path[-1]] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    try:
        ds = load_dataset(copy, "train")
    except DataError:
        return
    # what still loads is the artifact as written
    assert ds.num_tokens == load_dataset(artifact, "train").num_tokens


def test_a_huge_record_is_rejected_before_it_is_rendered(tmp_path: Path, tiny_model: Path) -> None:
    big = LINE.replace(b"hi %d", b"x" * (10 << 20))
    data = big + b"\n" + b"\n".join(LINE % i for i in range(3)) + b"\n"
    src = tmp_path / "big.jsonl"
    src.write_bytes(data)
    report = ftx.prepare(src, out=tmp_path / "o", model=tiny_model, max_length=100)
    assert report.splits["train"].records == 3 and report.rejects == {"too_long": 1}
    reject = json.loads((tmp_path / "o" / "rejects.jsonl").read_text().splitlines()[0])
    assert reject["line"] == 1 and "however it tokenizes" in reject["message"]


def test_every_format_name_the_engine_knows_is_a_cli_choice(
    tmp_path: Path, example_data: Path, tiny_model: Path
) -> None:
    from ftx import _core

    assert {"openai", "chatml", "sharegpt", "completion"} <= set(_core.format_names())
    done = _ftx(
        "prepare", example_data, "--model", tiny_model, "--out", tmp_path / "o", "--format",
        "openai",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
