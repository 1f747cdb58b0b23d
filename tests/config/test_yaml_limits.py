"""Hostile config files: an alias bomb, oversized, non-UTF-8, too deeply nested,
recursive, or holding values PyYAML cannot build.  Each is a clear ConfigError
(exit 2 from ``driftmon validate-config`` and ``driftmon run``), found quickly,
in little memory, with no traceback (issue 9, items 8 and 10)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftmon.config import ConfigError, load_config, parse_config
from driftmon.config.yamlsafe import MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH, YAMLLimitError, load_yaml

ROOT = Path(__file__).resolve().parents[2]
STREAM = "streams: [{name: s, features: [{name: c, type: categorical, top_k: 3}]}]\n"


def alias_bomb(levels: int = 9, fanout: int = 9) -> str:
    """The probe's shape: each level is a list of ``fanout`` aliases to the level
    below, so the last one expands to fanout**levels (9**9 = 387M) strings."""
    lines = ["streams:", "  - name: s", "    features: [{name: c, type: categorical, top_k: 3}]",
             f"    x0: &a0 [{','.join(['lol'] * fanout)}]"]
    lines += [f"    x{i}: &a{i} [{','.join([f'*a{i - 1}'] * fanout)}]" for i in range(1, levels)]
    lines.append(f"    segment_by: *a{levels - 1}")  # a key that walks its list
    return "\n".join(lines) + "\n"


def _limits() -> None:  # a regression must fail the test, not exhaust the machine
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


def cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTMON")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OPENBLAS_NUM_THREADS"] = "1"  # keeps numpy's address-space reservation under the limit
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "driftmon.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=_limits)
    return proc, time.monotonic() - start


def refused(path: Path, *words: str) -> None:
    """``validate-config`` and ``run`` both exit 2 with one clear line."""
    for args in (("validate-config", str(path)), ("run", "-c", str(path))):
        proc, elapsed = cli(*args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("driftmon: invalid config: "), proc.stderr
        for w in words:
            assert w in proc.stderr, (w, proc.stderr)
        assert elapsed < 15, f"{args} took {elapsed:.1f}s"


def test_alias_bomb_is_refused_at_once_in_little_memory(tmp_path):
    text = alias_bomb()
    assert len(text) < 600
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    # before: 194 s and 11.5 GB; now refused before anything walks the document (under 1 GiB of address space)
    refused(path, str(path), "aliases that expand to more than", "alias bomb")


def test_ordinary_aliases_and_merge_keys_still_work():
    doc = """
defaults: &hook {timeout: 2s, backoff_initial: 100ms, backoff_max: 5s}
cats: &cats [books, music, video]
streams:
  - {name: a, features: [{name: c, type: categorical, categories: *cats}]}
  - {name: b, features: [{name: c, type: categorical, categories: *cats}]}
alerts:
  webhooks:
    - {<<: *hook, name: one, url: "http://127.0.0.1:9/a"}
    - {<<: *hook, name: two, url: "http://127.0.0.1:9/b", timeout: 3s}
"""
    data = load_yaml(doc)
    data.pop("defaults"), data.pop("cats")
    cfg = parse_config(data)
    assert [s.features[0].categories for s in cfg.streams] == [("books", "music", "video")] * 2
    one, two = cfg.alerts.webhooks
    assert (one.timeout, one.backoff_max, two.timeout, two.backoff_initial) == (2.0, 5.0, 3.0, 0.1)


def test_alias_budget_counts_expanded_values():
    # 100 aliases of a 100-value list add 9,900 values: allowed; 102 aliases of it are over the budget
    ok = "a: &a [" + ",".join("x" * 100) + "]\nb: [" + ",".join(["*a"] * 99) + "]\n"
    assert len(load_yaml(ok)["b"]) == 99
    over = "a: &a [" + ",".join("x" * 100) + "]\nb: [" + ",".join(["*a"] * (MAX_ALIAS_NODES // 100 + 1)) + "]\n"
    with pytest.raises(YAMLLimitError, match="alias"):
        load_yaml(over)


@pytest.mark.parametrize("doc", ["a: &a [1, *a]", "a: &a {b: *a}", "a: &a {<<: *a}"])
def test_recursive_aliases_are_refused(doc):
    with pytest.raises(YAMLLimitError, match="recursive alias"):
        load_yaml(doc)


def test_nesting_is_bounded_as_written_and_through_aliases(tmp_path):
    assert load_yaml("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) is not None
    deep = tmp_path / "deep.yaml"
    deep.write_text(STREAM + "x: " + "[" * 100_000 + "]" * 100_000 + "\n")  # was a RecursionError traceback
    refused(deep, "nested more than 64 levels deep")
    # each alias nests the previous chain inside 40 more levels: 80 deep once expanded
    chain = "a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: &b " + "[" * 40 + "*a" + "]" * 40 + "\n"
    with pytest.raises(YAMLLimitError, match="once aliases are expanded"):
        load_yaml(chain)


def test_oversized_config_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as fh:
        fh.write(STREAM.encode())
        fh.truncate(1 << 34)  # a 16 GiB (sparse) file: only the first MiB + 1 byte is read
    refused(path, "larger than 1 MiB")
    just_under = tmp_path / "under.yaml"
    just_under.write_text(STREAM + "# " + "x" * (MAX_BYTES - len(STREAM) - 3) + "\n")
    assert just_under.stat().st_size == MAX_BYTES
    assert load_config(str(just_under)).streams[0].name == "s"


def test_non_utf8_config_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(STREAM.encode() + "# caf\u00e9\n".encode("latin-1"))  # was a UnicodeDecodeError traceback
    refused(path, "is not UTF-8 text", "byte 0xe9", "line 2")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + STREAM.encode())
    assert load_config(str(bom)).streams[0].name == "s"


@pytest.mark.parametrize("value,words", [
    ("2001-13-45", ["month must be in 1..12"]),  # was a ValueError traceback
    ("1" * 5000, ["cannot build a value"]),  # over Python's int digit limit
    ("!!python/object:os.system {}", ["could not determine a constructor"]),
    ("!!binary 'a'", ["failed to decode base64"]),
])
def test_values_pyyaml_cannot_build_are_config_errors(tmp_path, value, words):
    path = tmp_path / "bad.yaml"
    path.write_text(STREAM + f"x: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "is not valid YAML" in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_env_values_are_read_within_the_same_limits():
    doc = yaml.safe_load("streams: [{name: s, features: [{name: c, type: categorical, top_k: '${K}'}]}]")
    for value in ("1" * 5000, "[" * 1000, "&a [*a]"):
        with pytest.raises(ConfigError) as err:  # kept as text, then refused at the key
            parse_config(doc, {"K": value})
        assert err.value.path == "streams[0].features[0].top_k" and "expected an integer" in str(err.value)


YAMLISH = st.text(alphabet="[]{}:,&*!-?<| \n\t'\"#%@`\\>.abs019_~=eE+", max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(YAMLISH.map(str.encode), st.binary(max_size=300),
                      YAMLISH.map(lambda t: (STREAM + "x: " + t).encode())))
def test_any_bytes_are_a_config_or_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(data)
    try:
        load_config(str(path))
    except ConfigError as exc:
        assert str(exc)
