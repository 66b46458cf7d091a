#!/usr/bin/env python3
"""Builds the OCI image of the isoscope agent from a build tree, with no registry and no base image.

    scripts/build-image.py BUILD_DIR OUT [--binary PATH] [--name REF]

OUT is an OCI image-layout archive (a tar holding `oci-layout`, `index.json` and
`blobs/sha256/<digest>`), the form `ctr -n k8s.io images import OUT`, `skopeo copy oci-archive:OUT`
and `podman load -i OUT` read. It is written here with the Python standard library only.

The image has one gzip layer, a minimal root filesystem taken from this machine:
  - the agent (BUILD_DIR/isoscope, or --binary) at /usr/bin/isoscope;
  - exactly the shared libraries `ldd` reports for it, and its ELF interpreter (PT_INTERP);
  - every symlink met while resolving those paths on this machine (e.g. lib -> usr/lib,
    lib64 -> usr/lib64, usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/..., the soname
    links libstdc++.so.6 -> libstdc++.so.6.0.30), with the same targets, so the image resolves
    every path the way this machine does; and the directories above all of those.
Nothing else: no shell or other programs (the agent runs none: agent/loader.cpp KernelConfigHz()
reads /boot/config-<release> or /proc/config.gz in-process with zlib), no /etc, /tmp, /proc, /sys
(the runtime creates mount points; the DaemonSet mounts /sys/kernel/btf, /sys/fs/cgroup,
/sys/fs/bpf, /sys/kernel/tracing and /host/proc from the host).

Deterministic: entries sorted, mtime SOURCE_DATE_EPOCH (default 0), uid/gid 0, no user/group
names, modes normalised (0755 executables and directories, 0644 other files), gzip without name
or time, JSON with sorted keys. The same binary on the same machine gives the same bytes, so the
same digests.

Config: Entrypoint ["/usr/bin/isoscope"], Cmd ["agent"], Env PATH (deploy/daemonset.yaml runs
`command: ["isoscope"]`, which the runtime resolves through this PATH to /usr/bin/isoscope).
index.json names the image `docker.io/library/isoscope:latest` (annotation
io.containerd.image.name, what `ctr images import` tags it as): the normalised form of the
`isoscope:latest` that `kubectl kustomize deploy/` renders into the DaemonSet.

Prints the digests and the compressed/uncompressed layer and archive sizes (--list: and the
layer's files and symlinks).

Other small images (tests: a static pause, busybox) are built by the same code: import this file
(its name has a dash, so through importlib) and call build_image():

    spec = importlib.util.spec_from_file_location("build_image", "scripts/build-image.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    mod.build_image(out, "localhost/test/busybox:latest", {"/bin/busybox": "/usr/bin/busybox"},
                    entrypoint=None, cmd=["sh"], links={"/bin/sh": "busybox"})

build_image() raises BuildError where the CLI prints `build-image: ...` and exits 1.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile

DEFAULT_NAME = "docker.io/library/isoscope:latest"
IMAGE_BINARY = "usr/bin/isoscope"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

ELF_MACHINES = {62: "amd64", 183: "arm64"}  # e_machine -> GOARCH


class BuildError(Exception):
    """What build_image() and the helpers raise; the CLI prints it and exits 1."""


def fail(msg):
    raise BuildError(msg)


# ---- ELF and ldd ------------------------------------------------------------------------------


def elf_info(data):
    """(architecture, PT_INTERP or None) of a 64-bit little-endian ELF file's bytes; None if the
    bytes are not such an ELF file."""
    if data[:4] != b"\x7fELF":
        return None
    if data[4] != 2 or data[5] != 1:
        fail("only 64-bit little-endian ELF files are supported")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    interp = None
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, off)
        if p_type == 3:  # PT_INTERP
            interp = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    return ELF_MACHINES.get(e_machine, f"e_machine {e_machine}"), interp


def ldd(path):
    """Absolute paths `ldd` reports for path (libraries and interpreter), in its order; [] for a
    static executable. Fails on a library ldd cannot find."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    env["LC_ALL"] = "C"
    proc = subprocess.run(["ldd", path], capture_output=True, text=True, env=env, check=False)
    text = proc.stdout + proc.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if proc.returncode != 0:
        fail(f"ldd {path} failed:\n{text}")
    paths = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        if "not found" in line:
            fail(f"ldd {path}: {line}")
        m = re.match(r"^(\S+) => (\S+) \(0x[0-9a-f]+\)$", line) or re.match(
            r"^(\S+) \(0x[0-9a-f]+\)$", line
        )
        if not m:
            fail(f"ldd {path}: cannot parse {line!r}")
        p = m.group(m.lastindex)
        if p.startswith("/"):
            paths.append(p)  # linux-vdso.so.1 (no path) is the kernel's
    return paths


# ---- the root filesystem ----------------------------------------------------------------------


class Rootfs:
    """Entries of the layer, keyed by path relative to / (no leading slash)."""

    def __init__(self):
        self.files = {}  # path -> host path to read (or bytes)
        self.links = {}  # path -> symlink target (as on the host)

    def add_host_path(self, path):
        """Adds the regular file at absolute host path `path` at its real location, and every
        symlink met on the way (directory or file), resolved component by component like the
        kernel does. Returns the real path (absolute)."""
        todo = [c for c in path.split("/") if c]
        cur = "/"
        hops = 0
        while todo:
            name = todo.pop(0)
            if name == ".":
                continue
            if name == "..":
                cur = os.path.dirname(cur)
                continue
            nxt = os.path.join(cur, name)
            st = os.lstat(nxt)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    fail(f"{path}: too many symlinks")
                target = os.readlink(nxt)
                self.links[nxt.lstrip("/")] = target
                if target.startswith("/"):
                    cur = "/"
                todo = [c for c in target.split("/") if c] + todo
            elif stat.S_ISDIR(st.st_mode):
                if not todo:
                    fail(f"{path} is a directory")
                cur = nxt
            elif stat.S_ISREG(st.st_mode):
                if todo:
                    fail(f"{path}: {nxt} is not a directory")
                self.files[nxt.lstrip("/")] = nxt
                return nxt
            else:
                fail(f"{path}: {nxt} is neither file, directory nor symlink")
        fail(f"{path} does not name a file")
        return None

    def add_program(self, path, seen):
        """A host program, its libraries and interpreter (ELF) or its #! interpreter (script)."""
        real = self.add_host_path(path)
        if real in seen:
            return
        seen.add(real)
        with open(real, "rb") as f:
            head = f.read()
        info = elf_info(head)
        if info is not None:
            for lib in ldd(real):
                self.add_host_path(lib)
            if info[1]:
                self.add_host_path(info[1])
        elif head.startswith(b"#!"):
            interp = head[2:].split(b"\n", 1)[0].strip().split()[0].decode()
            self.add_program(interp, seen)

    def directories(self):
        dirs = set()
        for p in list(self.files) + list(self.links):
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs


def tar_bytes(entries, mtime):
    """A deterministic tar of entries: (name, kind, payload, mode) with kind 'dir', 'file'
    (payload bytes) or 'link' (payload target), sorted by name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, kind, payload, mode in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name + ("/" if kind == "dir" else ""))
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def gzip_bytes(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_path(path):
    """An image path in its layer form: relative to /, normalised; rejects '..' and empty names."""
    parts = [c for c in str(path).split("/") if c not in ("", ".")]
    if not parts or ".." in parts:
        fail(f"bad image path {path!r}")
    return "/".join(parts)


HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())


def build_image(out, name, files, entrypoint, cmd=(), mtime=0, links=None, dirs=(), env=None,
                working_dir="/", created_by=None):
    """Writes the OCI image-layout archive `out` of a one-layer image named `name`, and returns
    what it wrote (describe() prints it).

    files: {image path: host path (str or os.PathLike) or bytes}. A host file is read once; an
      ELF file brings the libraries `ldd` reports for it (run on a copy of the bytes read, so a
      relink meanwhile cannot mix versions) and its ELF interpreter, at their real host paths with
      every symlink met resolving them (a static binary brings nothing); a `#!` script brings its
      interpreter program (Rootfs.add_program) unless the image itself provides that path.
      Mode 0755 for ELF files, `#!` scripts and host files with an execute bit, else 0644.
    links: {image path: symlink target}, extra symlinks (e.g. busybox applets, /bin/sh -> busybox).
    dirs: extra empty directories (e.g. /tmp), mode 0755.
    entrypoint, cmd: the config's Entrypoint and Cmd (lists; None or empty leaves the key out).
    env: the config's Env (default: a PATH). mtime: every tar entry's time and the config's
      `created`. The architecture is the ELF files' (all must agree), else this machine's.
    Deterministic: the same inputs give the same bytes."""
    links = {image_path(p): str(t) for p, t in (links or {}).items()}
    extra_dirs = {image_path(d) for d in dirs}
    wanted = {image_path(p): src for p, src in files.items()}
    if len(wanted) != len(files):
        fail("two `files` entries name the same image path")
    provided = set(wanted) | set(links)

    rootfs = Rootfs()
    own = {}  # image path -> (bytes, mode)
    arches = set()
    dynamic = False
    seen = set()
    for path in sorted(wanted):
        src = wanted[path]
        if isinstance(src, (bytes, bytearray)):
            data, host_exec = bytes(src), False
        else:
            with open(src, "rb") as f:
                data = f.read()
            host_exec = bool(os.stat(src).st_mode & 0o111)
        info = elf_info(data)
        if info is not None:
            arch, interp = info
            if arch not in ELF_MACHINES.values():
                fail(f"/{path}: unsupported architecture ({arch})")
            arches.add(arch)
            with tempfile.TemporaryDirectory(prefix="isoscope-image-") as tmp:
                copy = os.path.join(tmp, os.path.basename(path))
                with open(copy, "wb") as f:
                    f.write(data)
                os.chmod(copy, 0o755)
                libs = ldd(copy)
            for lib in libs:
                rootfs.add_host_path(lib)
            if interp:
                rootfs.add_host_path(interp)
            dynamic = dynamic or bool(libs or interp)
        elif data.startswith(b"#!"):
            words = data[2:].split(b"\n", 1)[0].strip().split()
            if not words:
                fail(f"/{path}: empty #! line")
            interp = words[0].decode()
            if image_path(interp) not in provided:
                rootfs.add_program(interp, seen)
        executable = info is not None or data.startswith(b"#!") or host_exec
        own[path] = (data, 0o755 if executable else 0o644)

    for path in sorted(own):
        if path in rootfs.files or path in rootfs.links:
            fail(f"/{path} would be both an image file and a host file")
    for path, target in sorted(links.items()):
        if path in own or path in rootfs.files:
            fail(f"/{path} would be both a symlink and a file")
        if rootfs.links.get(path, target) != target:
            fail(f"/{path} -> {target}: this machine's /{path} links to {rootfs.links[path]}")
    if len(arches) > 1:
        fail(f"ELF files of several architectures: {sorted(arches)}")
    arch = arches.pop() if arches else HOST_ARCH
    if arch is None:
        fail(f"no ELF file names the architecture and {platform.machine()} is not supported")

    all_links = dict(rootfs.links)
    all_links.update(links)
    leaves = {**{p: "file" for p in rootfs.files}, **{p: "file" for p in own},
              **{p: "link" for p in all_links}}
    dirs_needed = set(extra_dirs)
    for p in list(leaves) + list(extra_dirs):
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs_needed.add("/".join(parts[:i]))
    clash = sorted(d for d in dirs_needed if d in leaves)
    if clash:
        fail(f"/{clash[0]} is a {leaves[clash[0]]} but entries lie below it")

    entries = [(d, "dir", None, 0o755) for d in dirs_needed]
    for path, target in all_links.items():
        entries.append((path, "link", target, 0o777))
    for path, host in rootfs.files.items():
        with open(host, "rb") as f:
            data = f.read()
        mode = 0o755 if os.stat(host).st_mode & 0o111 else 0o644
        entries.append((path, "file", data, mode))
    for path, (data, mode) in own.items():
        entries.append((path, "file", data, mode))
    names = [e[0] for e in entries]
    if len(names) != len(set(names)):
        fail("duplicate paths in the layer")

    if created_by is None:
        them = len(own) == 1
        created_by = "scripts/build-image.py: " + ", ".join("/" + p for p in sorted(own))
        if dynamic:
            created_by += (", the libraries ldd reports for " + ("it" if them else "them")
                           + (", its ELF interpreter" if them else ", their ELF interpreters"))
        if links:
            created_by += f", {len(links)} symlinks"

    layer_tar = tar_bytes(entries, mtime)
    layer_gz = gzip_bytes(layer_tar)
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    image_config = {"Env": list(env) if env is not None else [PATH_ENV], "WorkingDir": working_dir}
    if entrypoint:
        image_config["Entrypoint"] = list(entrypoint)
    if cmd:
        image_config["Cmd"] = list(cmd)
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [digest(layer_tar)]},
        "history": [{"created": created, "created_by": created_by}],
    }
    config_json = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": digest(config_json), "size": len(config_json)},
        "layers": [{"mediaType": MT_LAYER, "digest": digest(layer_gz), "size": len(layer_gz)}],
    }
    manifest_json = canonical_json(manifest)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": digest(manifest_json),
                "size": len(manifest_json),
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    index_json = canonical_json(index)
    oci_layout = canonical_json({"imageLayoutVersion": "1.0.0"})

    archive_entries = [
        ("blobs", "dir", None, 0o755),
        ("blobs/sha256", "dir", None, 0o755),
        ("oci-layout", "file", oci_layout, 0o644),
        ("index.json", "file", index_json, 0o644),
    ]
    for blob in (layer_gz, config_json, manifest_json):
        archive_entries.append(("blobs/sha256/" + digest(blob)[7:], "file", blob, 0o644))
    archive = tar_bytes(archive_entries, mtime)

    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp_out = out + ".tmp"
    with open(tmp_out, "wb") as f:
        f.write(archive)
    os.replace(tmp_out, out)

    return {
        "name": name,
        "arch": arch,
        "out": out,
        "manifest": digest(manifest_json),
        "config": digest(config_json),
        "layer": digest(layer_gz),
        "diff_id": digest(layer_tar),
        "layer_size": len(layer_gz),
        "layer_tar_size": len(layer_tar),
        "archive_size": len(archive),
        # (image path without the leading slash, symlink target or None), sorted
        "entries": sorted((n, all_links.get(n)) for n, k, _, _ in entries if k != "dir"),
        "dirs": len(dirs_needed),
    }


def describe(info, list_files=False):
    """The CLI's report of what build_image() wrote."""
    files = info["entries"]
    lines = [
        f"image {info['name']} ({info['arch']}) -> {info['out']}",
        f"  manifest {info['manifest']}",
        f"  config   {info['config']}",
        f"  layer    {info['layer']}  (diff_id {info['diff_id']})",
        f"  layer: {len(files)} files and symlinks, {info['dirs']} directories",
    ]
    for n, target in files if list_files else []:
        lines.append(f"    /{n}" + (f" -> {target}" if target is not None else ""))
    gz, tar, archive = info["layer_size"], info["layer_tar_size"], info["archive_size"]
    lines.append(f"  size: compressed layer {gz} bytes ({gz / 2**20:.1f} MiB), "
                 f"uncompressed layer {tar} bytes ({tar / 2**20:.1f} MiB), "
                 f"archive {archive} bytes ({archive / 2**20:.1f} MiB)")
    return "\n".join(lines)


def build_agent_image(binary, out, name=DEFAULT_NAME, mtime=0):
    """The agent's image: `binary` at /usr/bin/isoscope, what ldd reports for it, its interpreter."""
    with open(binary, "rb") as f:
        agent = f.read()  # one read: a relink of BUILD_DIR/isoscope meanwhile cannot mix versions
    info = elf_info(agent)
    if info is None:
        fail(f"{binary} is not an ELF executable")
    if info[0] not in ELF_MACHINES.values():
        fail(f"{binary}: unsupported architecture ({info[0]})")
    return build_image(out, name, {"/" + IMAGE_BINARY: agent}, entrypoint=["/" + IMAGE_BINARY],
                       cmd=["agent"], mtime=mtime)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("build_dir", help="the CMake build tree holding isoscope")
    ap.add_argument("out", help="the OCI archive to write (e.g. build/image/isoscope-oci.tar)")
    ap.add_argument("--binary", help="the agent binary (default: BUILD_DIR/isoscope)")
    ap.add_argument("--name", default=DEFAULT_NAME, help=f"image reference (default {DEFAULT_NAME})")
    ap.add_argument("-l", "--list", action="store_true", help="list the layer's files and symlinks")
    args = ap.parse_args()
    try:
        binary = args.binary or os.path.join(args.build_dir, "isoscope")
        if not os.path.isfile(binary):
            fail(f"{binary} not found: build first (make build)")
        if not shutil.which("ldd"):
            fail("ldd not found (package libc-bin)")
        try:
            mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
        except ValueError:
            fail("SOURCE_DATE_EPOCH must be an integer")
        print(describe(build_agent_image(binary, args.out, args.name, mtime), args.list))
    except BuildError as e:
        print(f"build-image: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
