"""`alignez-eval scorer-features`: list, export and import the scorer's stored features."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
A feature store holds the frozen LM features of every answer a scorer was trained or scored on
($ALIGNEZ_HOME/scorer/features/<identity>/, one folder per feature spec: model, layers, poolings,
answer cut, dtype). Encoding is the slow part of `train-scorer` (~0.1 s an answer on a CPU with
native bf16, 0.5-2 s on an AVX2-only one), so encode once where it is fast (a bigger CPU, a GPU)
and carry one file:

  alignez-eval scorer-features list
  alignez-eval scorer-features export 3f2a9c... --out alpaca-features.safetensors
  alignez-eval scorer-features import alpaca-features.safetensors      # on the other machine
  alignez-eval train-scorer ...                                        # finds every vector: 0 forward passes

An export is checked on import (format, spec, checksum over keys and vectors); rows already in
the store are kept.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--root", type=Path, default=None,
                        help="store root (default: $ALIGNEZ_HOME/scorer/features)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the stores: identity, rows, model, layers, dtype")
    ex = sub.add_parser("export", help="one store as one safetensors file")
    ex.add_argument("store", help="a store's identity (or its first characters, as `list` prints) or folder")
    ex.add_argument("--out", required=True, type=Path, help="file to write (.safetensors)")
    im = sub.add_parser("import", help="load an exported file into the local store")
    im.add_argument("file", type=Path)


def _find(store: str, root: Path | None) -> Path:
    from alignez_eval.errors import ConfigError
    from alignez_eval.scorer.features import store_dirs

    if Path(store).is_dir():
        return Path(store)
    hits = [d for d in store_dirs(root) if d.name.startswith(store)]
    if len(hits) != 1:
        known = ", ".join(d.name[:12] for d in store_dirs(root)) or "none"
        raise ConfigError(f"store {store!r} matches {len(hits)} stores (known: {known}); "
                          "give more characters or a folder")
    return hits[0]


def main(args: argparse.Namespace) -> int:
    import json

    from alignez_eval.scorer.features import (
        FeatureStore,
        IdentitySpec,
        export_store,
        import_store,
        store_dirs,
    )

    if args.action == "list":
        dirs = store_dirs(args.root)
        if not dirs:
            print("no feature stores yet")
        for d in dirs:
            ident = json.loads((d / "spec.json").read_text())
            n = len(FeatureStore(IdentitySpec(ident), d.parent))
            print(f"{d.name[:12]}  {n:>7} answers  {ident.get('model')} layers={ident.get('layers')} "
                  f"poolings={ident.get('poolings')} dtype={ident.get('dtype')} max_answer_tokens="
                  f"{ident.get('max_answer_tokens')}")
        return 0
    if args.action == "export":
        d = _find(args.store, args.root)
        n = export_store(d, args.out)
        print(f"exported {n} answers of store {d.name[:12]} to {args.out}")
        return 0
    d, n = import_store(args.file, args.root)
    print(f"imported {n} new answers into {d}")
    return 0
