"""`make image` (scripts/build-image.py): the agent's OCI image, checked against independent tools.

Builds the image from ISOSCOPE_BIN (a snapshot copy, so a relink meanwhile cannot mix versions)
into a temporary directory and checks:
  (a) skopeo, an independent OCI implementation, reads the archive: `inspect --raw` returns the
      manifest blob byte for byte, `inspect --config` the config, `inspect` the digests, and
      `skopeo copy` (which verifies every blob against its digest) copies it. Skipped, with a
      message, when skopeo is not installed (package `skopeo`).
  (b) every blob's sha256 is its name, every descriptor's digest and size match the blob, the
      config's diff_id is the sha256 of the decompressed layer; no blob is left unreferenced.
  (c) the layer holds exactly: /usr/bin/isoscope (the snapshot's bytes), the files `ldd` reports
      for the binary (run here, on the snapshot), the ELF interpreter (`readelf -l`), the symlinks
      met resolving those paths inside the image (each with this machine's target), and the
      directories above them; every file's bytes are this machine's. No shell or other program:
      the agent runs none (agent/loader.cpp KernelConfigHz reads the kernel config in-process).
  (d) unpacked, `chroot ROOT isoscope --help` (PATH from the image config, as the DaemonSet's
      `command: ["isoscope"]` is resolved) prints the usage and exits 0, and the image's own
      dynamic loader finds every library (`ld.so --list`).
  (e) two builds (the second from a copy at another path, with another mtime) are byte-identical,
      and build_image() called directly (the function tests use for their own small images,
      imported from the script's path) writes the same bytes for the agent as the CLI.
  (f) `kubectl kustomize deploy/` renders an image reference that normalises to the name the
      archive carries (io.containerd.image.name), the one `ctr images import` tags it with.

Needs root (chroot); exits 77 (ctest "skipped") otherwise. No BPF.
"""

import gzip
import hashlib
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
from pathlib import Path

from isoscope_harness import BIN, REPO, log, skip_module

SCRIPT = REPO / "scripts" / "build-image.py"
IMAGE_NAME = "docker.io/library/isoscope:latest"
IMAGE_BINARY = "usr/bin/isoscope"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
SKOPEO = shutil.which("skopeo")
KUBECTL = shutil.which("kubectl")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, check=False, **kw)


def host_ldd(path):
    """(soname or path, absolute path) pairs that ldd reports for path; the interpreter's line
    has no `=>`. linux-vdso is left out."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    proc = run(["ldd", str(path)], text=True, env=env)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pairs = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("linux-vdso"):
            continue
        assert "not found" not in line, line
        if len(parts) >= 3 and parts[1] == "=>":
            pairs.append((parts[0], parts[2]))
        else:
            pairs.append((parts[0], parts[0]))
    return pairs


def elf_interpreter(path):
    proc = run(["readelf", "-lW", str(path)], text=True)
    if proc.returncode != 0:
        return None  # not an ELF file
    m = re.search(r"\[Requesting program interpreter: (\S+)\]", proc.stdout)
    return m.group(1) if m else None


def required_host_paths(binary):
    """Absolute host paths the image must resolve (besides /usr/bin/isoscope): exactly the
    binary's ldd list and its ELF interpreter."""
    need = {p for _, p in host_ldd(binary)}
    interp = elf_interpreter(binary)
    if interp:
        need.add(interp)
    return need


def resolve_in_root(root, path):
    """Resolves absolute `path` inside directory `root` as a chroot would (absolute symlink
    targets restart at root). Returns (final path relative to root, symlinks passed, relative)."""
    todo = [c for c in path.split("/") if c]
    cur = []
    links = set()
    hops = 0
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            cur = cur[:-1]
            continue
        rel = "/".join(cur + [name])
        full = os.path.join(root, rel)
        st = os.lstat(full)  # FileNotFoundError: the image lacks it
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            assert hops < 40, f"symlink loop resolving {path}"
            links.add(rel)
            target = os.readlink(full)
            if target.startswith("/"):
                cur = []
            todo = [c for c in target.split("/") if c] + todo
        else:
            cur.append(name)
    return "/".join(cur), links


def normalise_reference(ref):
    """What containerd / the kubelet make of an image reference (docker's familiar names)."""
    name, sep, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if not slash:
        name = "docker.io/library/" + name
    elif not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    if ":" not in name.rsplit("/", 1)[-1] and not sep:
        name += ":latest"
    return name + sep + digest


def build_image(binary, out, env_extra=None):
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    env.update(env_extra or {})
    proc = run(
        [sys.executable, str(SCRIPT), str(Path(binary).parent), str(out), "--binary", str(binary)],
        text=True,
        env=env,
        timeout=240,
    )
    if proc.returncode != 0:
        raise AssertionError(f"build-image.py failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def setUpModule():
    if os.geteuid() != 0:
        skip_module("needs root: the image's root filesystem is run with chroot")
    if not os.access(BIN, os.X_OK):
        print(f"FAIL: isoscope binary {BIN} not found (set ISOSCOPE_BIN)", flush=True)
        sys.exit(1)
    for tool in ("ldd", "readelf", "chroot"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} not found", flush=True)
            sys.exit(1)


class ImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="isoscope-image-test-"))
        # A snapshot: build/isoscope may be relinked while this runs.
        snap_dir = cls.tmp / "build"
        snap_dir.mkdir()
        cls.binary = snap_dir / "isoscope"
        shutil.copyfile(BIN, cls.binary)
        os.chmod(cls.binary, 0o755)
        cls.binary_bytes = cls.binary.read_bytes()

        cls.archive_path = cls.tmp / "image" / "isoscope-oci.tar"
        started = time.monotonic()
        cls.build_output = build_image(cls.binary, cls.archive_path)
        log(f"build-image.py took {time.monotonic() - started:.1f} s:\n{cls.build_output}")
        cls.archive_bytes = cls.archive_path.read_bytes()

        # The second build: another path, another mtime, the same bytes.
        other = cls.tmp / "other-build"
        other.mkdir()
        shutil.copyfile(cls.binary, other / "isoscope")
        os.chmod(other / "isoscope", 0o755)
        os.utime(other / "isoscope", (1e9, 1e9))
        cls.second_path = cls.tmp / "second" / "isoscope-oci.tar"
        build_image(other / "isoscope", cls.second_path)

        cls.members = {}
        cls.member_info = {}
        with tarfile.open(cls.archive_path) as tar:
            for m in tar.getmembers():
                cls.member_info[m.name] = m
                if m.isfile():
                    cls.members[m.name] = tar.extractfile(m).read()
        cls.index = json.loads(cls.members["index.json"])
        desc = cls.index["manifests"][0]
        cls.manifest_bytes = cls.members["blobs/sha256/" + desc["digest"].split(":", 1)[1]]
        cls.manifest = json.loads(cls.manifest_bytes)
        cls.config_bytes = cls.blob(cls.manifest["config"]["digest"])
        cls.config = json.loads(cls.config_bytes)
        cls.layer_gz = cls.blob(cls.manifest["layers"][0]["digest"])
        cls.layer_tar = gzip.decompress(cls.layer_gz)

        cls.layer = {}
        with tarfile.open(fileobj=io.BytesIO(cls.layer_tar)) as tar:
            for m in tar.getmembers():
                cls.layer[m.name.rstrip("/")] = (m, tar.extractfile(m).read() if m.isfile() else None)
        cls.root = cls.tmp / "rootfs"
        cls.root.mkdir()
        # tar, not Python, unpacks: an independent reader of the layer.
        proc = run(["tar", "-xzf", "-", "-C", str(cls.root)], input=cls.layer_gz)
        assert proc.returncode == 0, proc.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def blob(cls, digest):
        return cls.members["blobs/sha256/" + digest.split(":", 1)[1]]

    # ---- (a) skopeo ---------------------------------------------------------------------------

    def skopeo(self, *args):
        if not SKOPEO:
            self.skipTest("skopeo not installed (apt-get install skopeo): no independent OCI reader")
        proc = run([SKOPEO, *args], timeout=180)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode(errors="replace"))
        return proc.stdout

    def test_a_skopeo_reads_manifest_config_and_digests(self):
        ref = f"oci-archive:{self.archive_path}"
        raw = self.skopeo("inspect", "--raw", ref)
        self.assertEqual(raw, self.manifest_bytes, "skopeo's manifest is not the one written")
        self.assertEqual(sha256(raw), self.index["manifests"][0]["digest"])
        config = json.loads(self.skopeo("inspect", "--config", ref))
        self.assertEqual(config, self.config)
        info = json.loads(self.skopeo("inspect", ref))
        self.assertEqual(info["Digest"], self.index["manifests"][0]["digest"])
        self.assertEqual(info["Layers"], [self.manifest["layers"][0]["digest"]])
        self.assertEqual((info["Architecture"], info["Os"]), (ARCH, "linux"))
        # skopeo copy verifies each blob it reads against its digest and size.
        dest = self.tmp / "skopeo-copy"
        self.skopeo("copy", "--quiet", ref, f"oci:{dest}:latest")
        copied = json.loads((dest / "index.json").read_text())
        self.assertEqual(copied["manifests"][0]["digest"], self.index["manifests"][0]["digest"])

    # ---- (b) blobs, descriptors, diff_ids -----------------------------------------------------

    def test_b_archive_layout_and_index(self):
        blobs = {n for n in self.members if n.startswith("blobs/")}
        self.assertEqual(set(self.members), {"oci-layout", "index.json"} | blobs)
        self.assertEqual(json.loads(self.members["oci-layout"]), {"imageLayoutVersion": "1.0.0"})
        self.assertEqual(self.index["schemaVersion"], 2)
        self.assertEqual(len(self.index["manifests"]), 1)
        desc = self.index["manifests"][0]
        self.assertEqual(desc["mediaType"], "application/vnd.oci.image.manifest.v1+json")
        self.assertEqual(
            desc["annotations"],
            {"io.containerd.image.name": IMAGE_NAME, "org.opencontainers.image.ref.name": "latest"},
        )
        self.assertEqual(desc["platform"], {"architecture": ARCH, "os": "linux"})
        for name, m in self.member_info.items():
            self.assertEqual((m.uid, m.gid, m.mtime), (0, 0, 0), name)

    def test_b_blob_digests_sizes_and_diff_ids(self):
        for name, data in self.members.items():
            if name.startswith("blobs/sha256/"):
                self.assertEqual(sha256(data), "sha256:" + name.rsplit("/", 1)[1], name)
        descriptors = [self.index["manifests"][0], self.manifest["config"], *self.manifest["layers"]]
        for d in descriptors:
            data = self.blob(d["digest"])
            self.assertEqual(d["size"], len(data), d)
        self.assertEqual(
            {"blobs/sha256/" + d["digest"].split(":")[1] for d in descriptors},
            {n for n in self.members if n.startswith("blobs/sha256/")},
            "blobs not referenced by a descriptor (or missing)",
        )
        self.assertEqual(self.manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json")
        self.assertEqual(self.manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json")
        self.assertEqual(len(self.manifest["layers"]), 1)
        self.assertEqual(self.manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip")
        self.assertEqual(self.config["rootfs"], {"type": "layers", "diff_ids": [sha256(self.layer_tar)]})
        # gzip header: no name, no time (RFC 1952: FLG byte 3, MTIME bytes 4..7).
        self.assertEqual(self.layer_gz[:3], b"\x1f\x8b\x08")
        self.assertEqual(self.layer_gz[3] & 0x08, 0, "gzip header carries a file name")
        self.assertEqual(self.layer_gz[4:8], b"\0\0\0\0", "gzip header carries a time")

    def test_b_config(self):
        c = self.config
        self.assertEqual((c["architecture"], c["os"]), (ARCH, "linux"))
        self.assertEqual(c["config"]["Entrypoint"], ["/usr/bin/isoscope"])
        self.assertEqual(c["config"]["Cmd"], ["agent"])
        self.assertEqual(len(c["history"]), len(c["rootfs"]["diff_ids"]))
        self.assertTrue(any(e.startswith("PATH=") for e in c["config"]["Env"]))

    # ---- (c) the layer's files ----------------------------------------------------------------

    def test_c_layer_holds_exactly_binary_libraries_interpreter_and_links(self):
        required = required_host_paths(self.binary)
        log("required host paths:\n  " + "\n  ".join(sorted(required)))
        files = {n for n, (m, _) in self.layer.items() if m.isfile()}
        links = {n for n, (m, _) in self.layer.items() if m.issym()}
        dirs = {n for n, (m, _) in self.layer.items() if m.isdir()}
        others = set(self.layer) - files - links - dirs
        self.assertEqual(others, set(), "hard links, devices or fifos in the layer")

        expected_files = {os.path.realpath(p).lstrip("/") for p in required} | {IMAGE_BINARY}
        self.assertEqual(sorted(files), sorted(expected_files))
        self.assertEqual(self.layer[IMAGE_BINARY][1], self.binary_bytes)
        for f in expected_files - {IMAGE_BINARY}:
            self.assertEqual(self.layer[f][1], Path("/", f).read_bytes(), f"/{f} differs from this machine's")

        # Every required path resolves inside the image to the file it names here; the symlinks
        # met on the way are all the layer has, each with this machine's target.
        passed = set()
        for p in sorted(required):
            final, met = resolve_in_root(self.root, p)
            self.assertEqual(final, os.path.realpath(p).lstrip("/"), p)
            passed |= met
        self.assertEqual(sorted(links), sorted(passed), "symlinks the image does not need (or lacks)")
        for link in links:
            self.assertEqual(self.layer[link][0].linkname, os.readlink("/" + link), link)

        ancestors = set()
        for n in files | links:
            parts = n.split("/")[:-1]
            ancestors |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
        self.assertEqual(sorted(dirs), sorted(ancestors))
        for n, (m, _) in self.layer.items():
            self.assertEqual((m.uid, m.gid, m.mtime), (0, 0, 0), n)
        self.assertEqual(self.layer[IMAGE_BINARY][0].mode, 0o755)

    # ---- (d) it runs --------------------------------------------------------------------------

    def chroot(self, *cmd, **kw):
        env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in self.config["config"]["Env"]}
        return run(["chroot", str(self.root), *cmd], text=True, env=env, **kw)

    def test_d_chroot_help_through_path(self):
        # `isoscope`, not /usr/bin/isoscope: deploy/daemonset.yaml says command: ["isoscope"],
        # found through the image's PATH.
        proc = self.chroot("isoscope", "--help")
        log(f"chroot isoscope --help -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("Usage:", proc.stdout)
        self.assertRegex(proc.stdout, r"\n\s+agent\s")
        self.assertEqual(proc.stderr, "")

    def test_d_image_loader_finds_every_library(self):
        interp = elf_interpreter(self.binary)
        if not interp:
            self.skipTest("static binary: no dynamic loader")
        proc = self.chroot(interp, "--list", "/usr/bin/isoscope")
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertNotIn("not found", proc.stdout)
        in_image = {l.split()[0] for l in proc.stdout.splitlines() if l.split() and "vdso" not in l}
        on_host = {name for name, _ in host_ldd(self.binary)}
        self.assertEqual(in_image, on_host)

    # ---- (e) reproducible ---------------------------------------------------------------------

    def test_e_two_builds_are_identical(self):
        self.assertEqual(sha256(self.second_path.read_bytes()), sha256(self.archive_bytes))

    def test_e_build_image_function_matches_cli(self):
        spec = importlib.util.spec_from_file_location("build_image_under_test", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = self.tmp / "function" / "isoscope-oci.tar"
        info = module.build_image(
            out, IMAGE_NAME, {"/" + IMAGE_BINARY: str(self.binary)},
            entrypoint=["/" + IMAGE_BINARY], cmd=["agent"], mtime=0,
        )
        self.assertEqual(sha256(out.read_bytes()), sha256(self.archive_bytes))
        self.assertEqual(info["manifest"], self.index["manifests"][0]["digest"])
        self.assertIn(IMAGE_BINARY, [path for path, _ in info["entries"]])

    # ---- (f) the name the deployment pulls ----------------------------------------------------

    def test_f_kustomize_renders_the_image_name(self):
        if not KUBECTL:
            self.skipTest("kubectl not installed (package kubernetes-client)")
        proc = run([KUBECTL, "kustomize", str(REPO / "deploy")], text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        try:
            import yaml  # pylint: disable=import-outside-toplevel

            docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
            ds = [d for d in docs if d.get("kind") == "DaemonSet"]
            containers = ds[0]["spec"]["template"]["spec"]["containers"]
            images = [c["image"] for c in containers]
            command = containers[0].get("command")
        except ImportError:
            images = re.findall(r"^\s*image:\s*(\S+)\s*$", proc.stdout, re.M)
            command = None
        log(f"rendered images: {images}, command: {command}")
        self.assertEqual([normalise_reference(i) for i in images], [IMAGE_NAME])
        if command:
            # The command the DaemonSet gives resolves (image PATH) to the image's Entrypoint.
            path = next(e[5:] for e in self.config["config"]["Env"] if e.startswith("PATH="))
            exe = command[0]
            candidates = [exe] if exe.startswith("/") else [f"{d}/{exe}" for d in path.split(":")]
            found = None
            for candidate in candidates:
                try:
                    final, _ = resolve_in_root(self.root, candidate)
                except FileNotFoundError:
                    continue
                if (self.root / final).is_file():
                    found = final
                    break
            self.assertEqual(found, IMAGE_BINARY, f"{exe} on the image's PATH is not the agent")


if __name__ == "__main__":
    unittest.main()
