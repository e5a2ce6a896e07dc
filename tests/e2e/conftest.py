"""Shared set-up for the end-to-end tests: the built gateway in front of
real MCP servers (@modelcontextprotocol/server-everything over stdio and the
repo's fixture over Streamable HTTP). Every process listens on 127.0.0.1 and
is stopped by its own pid."""

import os
import pathlib
import subprocess
import tempfile
import threading

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
SLUICE = pathlib.Path(os.environ.get("SLUICE_BIN", TARGET / "debug" / "sluice"))
FIXTURE = pathlib.Path(os.environ.get("SLUICE_FIXTURE_BIN", TARGET / "debug" / "sluice-fixture"))
EVERYTHING = HERE / "node_modules" / ".bin" / "mcp-server-everything"


def _read_line_with(proc, stream, prefix, timeout=90):
    """Reads `stream` until a line starts with `prefix`; keeps draining after."""
    found = {}
    done = threading.Event()
    log = []

    def pump():
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            log.append(line)
            if not done.is_set() and line.startswith(prefix):
                found["line"] = line
                done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    if not done.wait(timeout) or "line" not in found:
        proc.kill()
        raise RuntimeError(f"no line starting with {prefix!r}; output:\n" + "\n".join(log))
    return found["line"][len(prefix):].strip(), log


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def gateway_url():
    for p in (SLUICE, FIXTURE, EVERYTHING):
        assert p.exists(), f"{p} missing: run scripts/test.sh (it builds and installs what tests need)"
    remote = subprocess.Popen(
        [str(FIXTURE), "--name", "remote", "http", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    remote_url, _ = _read_line_with(remote, remote.stdout, "listening on ")
    tmp = tempfile.mkdtemp(prefix="sluice-e2e-")
    cfg = pathlib.Path(tmp) / "sluice.toml"
    cfg.write_text(
        f"""
[[servers]]
name = "everything"
command = "{EVERYTHING}"

[[servers]]
name = "remote"
url = "{remote_url}"
"""
    )
    gw = subprocess.Popen(
        [str(SLUICE), "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url, _ = _read_line_with(gw, gw.stderr, "sluice listening on ")
    yield url
    _stop(gw)
    _stop(remote)
