"""Regenerate the Python stubs (prism/v1/) and Envoy's descriptor set (gateway/prism.pb).

python protos/generate.py           # write them
python protos/generate.py --check   # exit 1 when the committed files are stale

The generator, grpcio-tools, is the `build` extra (`pip install -e '.[build]'`; `make protos`
and `make test` install it): nothing at run time needs it.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import google.api

try:
    from grpc_tools import protoc
except ImportError:
    sys.exit("protos/generate.py needs grpcio-tools, the `build` extra: pip install -e '.[build]'")

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
STUBS = Path("prism") / "v1"
DESCRIPTOR = Path("gateway") / "prism.pb"
# google/api/*.proto and google/rpc/*.proto ship inside googleapis-common-protos.
GOOGLEAPIS = Path(google.api.__path__[0]).parent.parent
# status.proto and error_details.proto go into the descriptor set so that
# errors with details reach JSON clients.
EXTRA = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "prism").rglob("*.proto"))
    (out / STUBS).mkdir(parents=True, exist_ok=True)
    (out / DESCRIPTOR.parent).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{GOOGLEAPIS}",
        f"-I{protoc_include()}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on the stubs")
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{GOOGLEAPIS}",
        f"-I{protoc_include()}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out / DESCRIPTOR}",
        *sources,
        *EXTRA,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on the descriptor set")
    (out / STUBS / "__init__.py").write_text(
        '"""Generated from protos/prism/v1 by protos/generate.py."""\n'
    )
    (out / STUBS / "py.typed").write_text("")


def protoc_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__path__[0]) / "_proto"


def outputs(root: Path) -> list[Path]:
    stubs = sorted(p.relative_to(root) for p in (root / STUBS).iterdir() if p.is_file())
    return [*stubs, DESCRIPTOR]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if check:
            stale = [
                str(p)
                for p in outputs(fresh)
                if not (ROOT / p).is_file() or not filecmp.cmp(fresh / p, ROOT / p, shallow=False)
            ]
            extra = sorted(set(map(str, outputs(ROOT))) - set(map(str, outputs(fresh))))
            if stale or extra:
                sys.exit(
                    "generated files are stale; run `make protos`: " + ", ".join(stale + extra)
                )
            print("generated files are up to date")
            return
        shutil.rmtree(ROOT / STUBS, ignore_errors=True)
        for p in outputs(fresh):
            (ROOT / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / p, ROOT / p)
        print(f"wrote {STUBS}/ and {DESCRIPTOR}")


if __name__ == "__main__":
    main()
