#!/usr/bin/env python3
"""The npm packages of the OTLP tests (tests/otlp/package.json, exact versions, with
package-lock.json), installed once per build tree and reused.

  node_env.py install DIR            copy package.json + package-lock.json into DIR and run
                                     `npm ci` there unless DIR/node_modules already matches the lock
  node_env.py run DIR SCRIPT ARGS... install if needed, then `node SCRIPT ARGS` with NODE_PATH set
                                     to DIR/node_modules (the scripts stay in the source tree)

Concurrent callers (ctest -j, several test programs) serialise on DIR/.lock. A failed install is
a test failure (exit 1) with npm's output: the tests need these exact packages.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("package.json", "package-lock.json")


def _digest():
    h = hashlib.sha256()
    for name in FILES:
        h.update((HERE / name).read_bytes())
    return h.hexdigest()


def ensure(dest):
    """Installs the pinned packages into dest (a directory in the build tree); returns the
    node_modules path. Raises RuntimeError with npm's output when npm fails."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    want = _digest()
    stamp = dest / ".installed"
    with open(dest / ".lock", "w", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text(encoding="ascii").strip() == want and (
            dest / "node_modules").is_dir():
            return dest / "node_modules"
        for name in FILES:
            shutil.copyfile(HERE / name, dest / name)
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found: install the Debian packages nodejs and npm")
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=dest, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"`npm ci` in {dest} failed (exit {proc.returncode}); the OTLP tests need the "
                f"packages pinned in {HERE / 'package.json'}\n{proc.stdout}\n{proc.stderr}")
        stamp.write_text(want + "\n", encoding="ascii")
        return dest / "node_modules"


def node_env(dest):
    """Environment for running the node scripts of tests/otlp against dest's packages."""
    env = dict(os.environ)
    env["NODE_PATH"] = str(Path(dest) / "node_modules")
    return env


def main(argv):
    if len(argv) < 3 or argv[1] not in ("install", "run"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        modules = ensure(argv[2])
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    if argv[1] == "install":
        print(f"OTLP test packages ready in {modules}")
        return 0
    node = shutil.which("node")
    if node is None:
        print("FAIL: node not found: install the Debian package nodejs", file=sys.stderr)
        return 1
    return subprocess.run([node] + argv[3:], env=node_env(argv[2]), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
