#!/usr/bin/python3
"""A small crictl for the tests: drives a CRI runtime (containerd's CRI plugin) over its gRPC socket.

    cri_tool.py --socket SOCK [--gen DIR] [--timeout S] COMMAND ...

No crictl package exists here, so this speaks runtime.v1 itself with the messages of
tests/cri/cri_test.proto (package isoscope.test.cri, the spec's field numbers), compiled with
`protoc --python_out` (about 20 ms) into a cache directory: --gen, else $ISOSCOPE_CRI_GEN, else a
fresh temporary directory removed at exit. Each method is called by its full path
/runtime.v1.RuntimeService/<Method>.
It needs grpcio and protobuf, which only Debian's /usr/bin/python3 has here (python3-grpcio,
python3-protobuf): run under another python3 without grpc, it re-executes itself with
/usr/bin/python3.

Requests and answers are JSON in the proto field names (json_format ParseDict / MessageToDict with
preserving_proto_field_name=True; answers include fields at their default value, e.g. state
SANDBOX_READY, 0). A JSON argument is inline JSON (starting with `{`), a file
name, or `-` (stdin).

    version                                   VersionResponse
    status                                    StatusResponse (RuntimeReady, NetworkReady)
    runp CONFIG [--runtime-handler H]         PodSandboxConfig -> prints the pod id
    create POD_ID CONTAINER_CONFIG SANDBOX_CONFIG -> prints the container id
    start ID | stop ID [--timeout N] | rm ID  containers
    stopp ID | rmp ID                         pod sandboxes
    update ID RESOURCES                       LinuxContainerResources
    pods [--id ID] [--label K=V]... [--state ready|notready]         JSON list of PodSandbox
    ps [--id ID] [--pod ID] [--label K=V]... [--state created|running|exited|unknown]
                                              JSON list of Container
    inspectp ID | inspect ID                  {"status": ..., "info": {...}} (verbose; each info
                                              value is parsed JSON where it is JSON)
    images | inspecti REF                     ListImages / ImageStatus
    exec [--timeout N] [--json] ID -- CMD...  ExecSync: the command's stdout to stdout, stderr to
                                              stderr, exit status = the command's (--json: one JSON
                                              object {stdout, stderr, exit_code} instead, exit 0)
    call Service/Method REQUEST               any method of tests/cri/cri_test.proto, raw

A gRPC error prints `cri_tool: <Method>: <CODE>: <details>` on stderr and exits 1.
"""

import argparse
import base64
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(os.path.dirname(HERE), "cri", "cri_test.proto")
SYSTEM_PYTHON = "/usr/bin/python3"
WIRE_PACKAGE = "runtime.v1"  # the spec's package: the gRPC paths carry it


def die(msg, code=1):
    print(f"cri_tool: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def ensure_grpc():
    """Imports grpc, or re-executes this script with /usr/bin/python3 (which has it)."""
    try:
        import grpc  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import google.protobuf  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) and os.access(
            SYSTEM_PYTHON, os.X_OK
        ):
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
        die("needs grpcio and protobuf (Debian: python3-grpcio python3-protobuf for /usr/bin/python3)")


def load_messages(gen_dir):
    """The cri_test_pb2 module, compiled from PROTO into gen_dir/<hash of the proto> once."""
    with open(PROTO, "rb") as f:
        proto = f.read()
    key = hashlib.sha256(proto).hexdigest()[:16]
    out = os.path.join(gen_dir, key)
    module_file = os.path.join(out, "cri_test_pb2.py")
    if not os.path.exists(module_file):
        os.makedirs(gen_dir, exist_ok=True)
        # Compiled in a private directory, then renamed: concurrent runs never see half a file.
        work = tempfile.mkdtemp(prefix=".protoc-", dir=gen_dir)
        proc = subprocess.run(
            ["protoc", f"-I{os.path.dirname(PROTO)}", f"--python_out={work}", PROTO],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            die(f"protoc failed on {PROTO}:\n{proc.stderr}")
        try:
            os.rename(work, out)
        except OSError:
            if not os.path.exists(module_file):
                raise
            subprocess.run(["rm", "-rf", "--", work], check=False)  # another run was first
    if out not in sys.path:
        sys.path.insert(0, out)
    return importlib.import_module("cri_test_pb2")


class Client:
    def __init__(self, socket, pb2, timeout):
        import grpc  # pylint: disable=import-outside-toplevel

        self.grpc = grpc
        self.pb2 = pb2
        self.timeout = timeout
        target = socket if "://" in socket else "unix://" + os.path.abspath(socket)
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])

    def types(self, service, method):
        svc = self.pb2.DESCRIPTOR.services_by_name.get(service)
        if svc is None or method not in svc.methods_by_name:
            die(f"no method {service}/{method} in {PROTO}")
        m = svc.methods_by_name[method]
        return getattr(self.pb2, m.input_type.name), getattr(self.pb2, m.output_type.name)

    def call(self, method, request=None, service="RuntimeService", timeout=None):
        """Calls /runtime.v1.<service>/<method> with request (a message or a dict); returns the
        response message. A gRPC error ends the program (exit 1)."""
        from google.protobuf import json_format  # pylint: disable=import-outside-toplevel

        req_type, resp_type = self.types(service, method)
        if request is None:
            request = req_type()
        elif isinstance(request, dict):
            try:
                request = json_format.ParseDict(request, req_type())
            except json_format.ParseError as e:
                die(f"{method}: bad request: {e}")
        rpc = self.channel.unary_unary(
            f"/{WIRE_PACKAGE}.{service}/{method}",
            request_serializer=req_type.SerializeToString,
            response_deserializer=resp_type.FromString,
        )
        try:
            return rpc(request, timeout=timeout or self.timeout)
        except self.grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            die(f"{method}: {code.name if code else 'ERROR'}: {details}")
        return None


def to_dict(msg):
    from google.protobuf import json_format  # pylint: disable=import-outside-toplevel

    # Default values included: a pod in SANDBOX_READY (0) still says so, as crictl's JSON does.
    return json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


def parse_info(info):
    out = {}
    for k, v in info.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def read_json(arg):
    if arg.lstrip().startswith("{"):
        text = arg
    elif arg == "-":
        text = sys.stdin.read()
    else:
        with open(arg, encoding="utf-8") as f:
            text = f.read()
    try:
        return json.loads(text)
    except ValueError as e:
        die(f"not JSON ({e}): {arg[:200]}")
    return None


def labels(pairs):
    out = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep:
            die(f"--label takes KEY=VALUE, not {p!r}")
        out[k] = v
    return out


def emit(obj):
    print(json.dumps(obj, indent=2, sort_keys=True))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--socket", "-s", required=True, help="the CRI socket (path or unix:// URL)")
    ap.add_argument("--gen", help="cache directory for the protoc output "
                    "(default $ISOSCOPE_CRI_GEN, else a temporary directory removed at exit)")
    ap.add_argument("--rpc-timeout", type=float, default=120.0, help="gRPC deadline, seconds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("version")
    sub.add_parser("status")
    p = sub.add_parser("runp")
    p.add_argument("config")
    p.add_argument("--runtime-handler", default="")
    p = sub.add_parser("create")
    p.add_argument("pod_id")
    p.add_argument("container_config")
    p.add_argument("sandbox_config")
    for name in ("start", "rm", "stopp", "rmp", "inspect", "inspectp"):
        sub.add_parser(name).add_argument("id")
    p = sub.add_parser("stop")
    p.add_argument("id")
    p.add_argument("--timeout", type=int, default=0, help="seconds before SIGKILL")
    p = sub.add_parser("update")
    p.add_argument("id")
    p.add_argument("resources")
    p = sub.add_parser("pods")
    p.add_argument("--id", default="")
    p.add_argument("--label", action="append")
    p.add_argument("--state", choices=["ready", "notready"])
    p = sub.add_parser("ps")
    p.add_argument("--id", default="")
    p.add_argument("--pod", default="")
    p.add_argument("--label", action="append")
    p.add_argument("--state", choices=["created", "running", "exited", "unknown"])
    sub.add_parser("images")
    sub.add_parser("inspecti").add_argument("ref")
    p = sub.add_parser("exec")
    p.add_argument("--timeout", type=int, default=0, help="seconds (0: no limit)")
    p.add_argument("--json", action="store_true")
    p.add_argument("id")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("call")
    p.add_argument("method", help="Service/Method, e.g. RuntimeService/Version")
    p.add_argument("request", nargs="?", default="{}")
    args = ap.parse_args(argv)

    ensure_grpc()
    gen = args.gen or os.environ.get("ISOSCOPE_CRI_GEN")
    if gen:
        return run(args, load_messages(gen))
    with tempfile.TemporaryDirectory(prefix="isoscope-cri-gen-") as tmp:
        return run(args, load_messages(tmp))


def run(args, pb2):
    c = Client(args.socket, pb2, args.rpc_timeout)

    if args.cmd == "version":
        emit(to_dict(c.call("Version", {"version": "v1"})))
    elif args.cmd == "status":
        resp = c.call("Status", {"verbose": True})
        emit({"status": to_dict(resp.status), "info": parse_info(resp.info)})
    elif args.cmd == "runp":
        resp = c.call("RunPodSandbox", {"config": read_json(args.config),
                                        "runtime_handler": args.runtime_handler})
        print(resp.pod_sandbox_id)
    elif args.cmd == "create":
        resp = c.call("CreateContainer", {"pod_sandbox_id": args.pod_id,
                                          "config": read_json(args.container_config),
                                          "sandbox_config": read_json(args.sandbox_config)})
        print(resp.container_id)
    elif args.cmd == "start":
        c.call("StartContainer", {"container_id": args.id})
    elif args.cmd == "stop":
        c.call("StopContainer", {"container_id": args.id, "timeout": args.timeout},
               timeout=args.rpc_timeout + args.timeout)
    elif args.cmd == "rm":
        c.call("RemoveContainer", {"container_id": args.id})
    elif args.cmd == "stopp":
        c.call("StopPodSandbox", {"pod_sandbox_id": args.id})
    elif args.cmd == "rmp":
        c.call("RemovePodSandbox", {"pod_sandbox_id": args.id})
    elif args.cmd == "update":
        c.call("UpdateContainerResources", {"container_id": args.id,
                                            "linux": read_json(args.resources)})
    elif args.cmd == "pods":
        flt = {"id": args.id, "label_selector": labels(args.label)}
        if args.state:
            flt["state"] = {"state": "SANDBOX_" + args.state.upper()}
        emit([to_dict(p) for p in c.call("ListPodSandbox", {"filter": flt}).items])
    elif args.cmd == "ps":
        flt = {"id": args.id, "pod_sandbox_id": args.pod, "label_selector": labels(args.label)}
        if args.state:
            flt["state"] = {"state": "CONTAINER_" + args.state.upper()}
        emit([to_dict(x) for x in c.call("ListContainers", {"filter": flt}).containers])
    elif args.cmd in ("inspect", "inspectp"):
        if args.cmd == "inspect":
            resp = c.call("ContainerStatus", {"container_id": args.id, "verbose": True})
        else:
            resp = c.call("PodSandboxStatus", {"pod_sandbox_id": args.id, "verbose": True})
        emit({"status": to_dict(resp.status), "info": parse_info(resp.info)})
    elif args.cmd == "images":
        emit([to_dict(i) for i in c.call("ListImages", service="ImageService").images])
    elif args.cmd == "inspecti":
        resp = c.call("ImageStatus", {"image": {"image": args.ref}, "verbose": True},
                      service="ImageService")
        if not resp.HasField("image"):
            die(f"no image {args.ref}")
        emit({"image": to_dict(resp.image), "info": parse_info(resp.info)})
    elif args.cmd == "exec":
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not cmd:
            die("exec needs a command after --")
        resp = c.call("ExecSync", {"container_id": args.id, "cmd": cmd, "timeout": args.timeout},
                      timeout=args.rpc_timeout + args.timeout)
        if args.json:
            def text(b):
                try:
                    return b.decode()
                except UnicodeDecodeError:
                    return {"base64": base64.b64encode(b).decode()}

            emit({"stdout": text(resp.stdout), "stderr": text(resp.stderr),
                  "exit_code": resp.exit_code})
            return 0
        sys.stdout.buffer.write(resp.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(resp.stderr)
        sys.stderr.flush()
        return resp.exit_code
    elif args.cmd == "call":
        service, _, method = args.method.rpartition("/")
        emit(to_dict(c.call(method, read_json(args.request), service=service or "RuntimeService")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
