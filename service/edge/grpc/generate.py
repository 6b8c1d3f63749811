"""Regenerates the checked-in modules beside `grpc_predict_v2.proto`: `python -m service.edge.grpc.generate`
from the repository root (needs the dev extra's grpcio-tools; the service itself never imports this module).

grpcio-tools writes the three files; one line is then changed: the messages go into a descriptor pool of their
own, not protobuf's default one, because Triton's client registers the same `inference.*` names in the default
pool from its own .proto file, and protobuf refuses a second file that defines them ("duplicate symbol
'inference.ServerLiveRequest'"): a process that imports tritonclient.grpc (a test, a benchmark, an application
that also calls Triton) could not import the service otherwise. The wire format does not change.
tests/service/test_grpc_generated.py regenerates into a temporary folder and fails when the files differ.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
PROTO = HERE / "grpc_predict_v2.proto"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("


def generate() -> dict[str, str]:
    """The generated modules' text, by file name, from the .proto as it is now."""
    with tempfile.TemporaryDirectory() as out:
        proto = PROTO.relative_to(REPO_ROOT).as_posix()
        # -I the repository root: the modules import each other as service.edge.grpc.*. In a child process (the
        # dev extra's grpcio-tools): its embedded protobuf crashed (SIGSEGV) in a test process that had loaded
        # pyarrow, jaxlib and h5py before it.
        run = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO_ROOT}", f"--python_out={out}", f"--pyi_out={out}",
             f"--grpc_python_out={out}", proto],
            capture_output=True, text=True, check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"protoc failed on {proto} with status {run.returncode}: {run.stderr.strip()}")
        folder = Path(out) / PROTO.parent.relative_to(REPO_ROOT)
        texts = {name: (folder / name).read_text() for name in GENERATED}
    pb2 = texts["grpc_predict_v2_pb2.py"]
    if pb2.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"protoc's output no longer holds '{_DEFAULT_POOL}': update {__file__}")
    texts["grpc_predict_v2_pb2.py"] = pb2.replace(_DEFAULT_POOL, _OWN_POOL)
    return texts


def main() -> None:
    for name, text in generate().items():
        (HERE / name).write_text(text)
        print(f"wrote {(HERE / name).relative_to(REPO_ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
